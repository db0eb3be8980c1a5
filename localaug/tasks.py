"""Task cards: a task is a YAML file (data files, fields, labels, prompts), never a fork of the pipeline.

`Task` renders a row into the student's training pair and evaluation query, judges the student's
answer, renders the teacher's augmentation prompt for a wrong seed example and parses the teacher's
text back into a row. The layout of a card is documented in tasks/README.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import check_keys, data_root, load_yaml, read_rows
from .errors import UserError
from .modelcards import project_root
from .protocols import EvalItem, EvalResult, Sampling, TrainItem
from .task_kinds import KINDS, Kind, Where

BUILTIN_PREFIX = "@builtin/"

_TOP_KEYS = {"name", "kind", "description", "data", "labels", "student", "teacher", "defaults"}
_DATA_KEYS = {"dir", "splits", "fields", "id_field"}
_STUDENT_KEYS = {"prompt", "answer", "max_new_tokens", "stop"}
_TEACHER_KEYS = {"instruction", "original", "new", "example", "stop", "max_tokens", "temperature", "top_p",
                 "shot", "shots_header", "max_shots"}
_DEFAULT_KEYS = {"seed_size", "iterations", "per_wrong", "test_size", "eval_mode", "student_settings"}


@dataclass(frozen=True)
class Example:
    """One row in canonical fields (see task_kinds), with its id and where it came from."""

    id: str
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.data, **({"meta": self.meta} if self.meta else {})}

    @staticmethod
    def from_json(row: dict[str, Any]) -> Example:
        data = {k: v for k, v in row.items() if k not in ("id", "meta")}
        return Example(id=str(row["id"]), data=data, meta=dict(row.get("meta") or {}))


@dataclass
class TeacherPrompt:
    prompt: str  # completion prompt for base models (ends with the open slot)
    messages: tuple[tuple[str, str], ...]  # the same, as chat turns, for instruction models
    prefix: str  # the literal text the completion continues (prepended before parsing)
    prompt_hash: str
    template: str = "new"  # which card template the answer follows: "new" (paper prompt) or "shot"


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _template_prefix(template: str) -> str:
    """The literal text before a template's first field: where a completion prompt leaves off."""
    first_field = next(iter(_template_fields(template)), None)
    return template.split("{" + first_field + "}")[0] if first_field else template


class Task:
    def __init__(self, card: dict[str, Any], path: Path, data_dir: str | Path | None = None) -> None:
        self.path = path
        card = check_keys(card, _TOP_KEYS, "", path)
        self.name: str = str(card.get("name") or path.stem)
        kind = card.get("kind")
        if kind not in KINDS:
            raise UserError(f"unknown kind {kind!r} (one of: {', '.join(KINDS)})", file=path, field="kind")
        self.kind: Kind = KINDS[kind]
        self.description: str = str(card.get("description", ""))
        self.data = check_keys(card.get("data"), _DATA_KEYS, "data", path)
        self.student = check_keys(card.get("student"), _STUDENT_KEYS, "student", path)
        self.teacher = check_keys(card.get("teacher"), _TEACHER_KEYS, "teacher", path)
        self.defaults = check_keys(card.get("defaults"), _DEFAULT_KEYS, "defaults", path)
        labels = card.get("labels") or {}
        if self.kind.name == "classification":
            if isinstance(labels, list):
                labels = {str(x): str(x) for x in labels}
            if not isinstance(labels, dict) or len(labels) < 2:
                raise UserError("a classification task needs at least two labels", file=path, field="labels")
        self.labels: dict[str, str] = {str(k): str(v) for k, v in labels.items()}
        for key, sect in (("prompt", self.student), ("answer", self.student), ("instruction", self.teacher),
                          ("original", self.teacher), ("new", self.teacher), ("example", self.teacher)):
            if key not in sect:
                section = "student" if sect is self.student else "teacher"
                raise UserError("missing key", file=path, field=f"{section}.{key}")
        if "splits" not in self.data or "train" not in self.data["splits"]:
            raise UserError("data.splits needs at least a 'train' file", file=path, field="data.splits")
        self._data_dir = data_dir
        self._new_re = self._compile_template(str(self.teacher["new"]))
        self._shot_re = self._compile_template(self.shot_template())

    # ------------------------------------------------------------------ data

    def data_folder(self) -> Path:
        d = str(self.data.get("dir", self.name))
        if d.startswith(BUILTIN_PREFIX):
            return project_root() / "tasks" / d[len(BUILTIN_PREFIX):]
        p = Path(d).expanduser()
        return p if p.is_absolute() else data_root(self._data_dir) / p

    def split_path(self, split: str) -> Path:
        splits = self.data["splits"]
        if split not in splits:
            raise UserError(f"task '{self.name}' has no '{split}' split (has: {', '.join(splits)})",
                            file=self.path, field="data.splits")
        return self.data_folder() / str(splits[split])

    def splits(self) -> list[str]:
        return list(self.data["splits"])

    def load_split(self, split: str) -> list[Example]:
        return self.read_file(self.split_path(split), id_prefix=split)

    def read_file(self, path: Path, id_prefix: str | None = None) -> list[Example]:
        """Rows of a user file (card field names) or of our own JSONL (canonical names), validated."""
        mapping: dict[str, str] = dict(self.data.get("fields") or {})
        id_field = self.data.get("id_field")
        prefix = id_prefix or Path(path).stem
        out, seen = [], set()
        for line, row in read_rows(Path(path)):
            canon = {}
            for name in self.kind.fields_in_file:
                src = mapping.get(name, name)
                canon[name] = row[src] if src in row else row.get(name)
            data = self.kind.validate(canon, self.labels, Where(str(path), line))
            if "id" in row:
                ex_id = str(row["id"])
            elif id_field and row.get(id_field) is not None:
                ex_id = str(row[id_field])
            else:
                ex_id = f"{prefix}-{line}"
            if ex_id in seen:
                raise UserError(f"duplicate id '{ex_id}'", file=path, line=line, field="id")
            seen.add(ex_id)
            out.append(Example(ex_id, data, dict(row.get("meta") or {})))
        if self.kind.name == "classification" and id_prefix == "train":
            found = {e.data["label"] for e in out}
            if len(found) < 2:
                raise UserError(f"only one label ({', '.join(found)}) in the training data; "
                                "a classifier needs at least two", file=path, field="label")
        return out

    def label_of(self, ex: Example) -> str | None:
        return self.kind.label(ex.data)

    def dedup_text(self, ex: Example) -> str:
        return self.kind.dedup_text(ex.data)

    # ------------------------------------------------------------------ student

    def _fields(self, ex: Example) -> dict[str, str]:
        return self.kind.fields(ex.data, self.labels)

    def train_item(self, ex: Example) -> TrainItem:
        f = self._fields(ex)
        return TrainItem(self.student["prompt"].format(**f), self.student["answer"].format(**f))

    def eval_mode(self, requested: str | None = None) -> str:
        mode = requested or self.defaults.get("eval_mode") or ("score" if self.kind.scored else "generate")
        if mode not in ("score", "generate"):
            raise UserError(f"eval mode must be 'score' or 'generate', got {mode!r}", field="eval_mode")
        if mode == "score" and not self.kind.scored:
            raise UserError(f"task '{self.name}' ({self.kind.name}) can only be evaluated by generation",
                            field="eval_mode")
        return mode

    def eval_item(self, ex: Example, mode: str = "score") -> EvalItem:
        f = self._fields(ex)
        prompt = self.student["prompt"].format(**f)
        if mode == "score":
            choices = tuple(self.student["answer"].format(**cf) for cf in self.kind.choice_fields(ex.data,
                                                                                                  self.labels))
            return EvalItem(prompt, choices=choices)
        return EvalItem(prompt, max_new_tokens=int(self.student.get("max_new_tokens", 16)),
                        stop=tuple(self.student.get("stop", ["\n"])))

    def judge(self, ex: Example, result: EvalResult) -> tuple[str | None, bool]:
        """(prediction, correct) for one student answer."""
        if result.choice_index is not None:
            pred: str | None = self.kind.prediction_from_choice(ex.data, self.labels, result.choice_index)
        else:
            pred = self.kind.prediction_from_text(ex.data, self.labels, result.output)
        return pred, self.kind.is_correct(ex.data, pred)

    def readable(self, prediction: str | None) -> str:
        return self.kind.readable(prediction, self.labels)

    def margin(self, ex: Example, result: EvalResult) -> dict[str, Any]:
        """{"margin": gold log-likelihood minus the best other choice's, "runner_up": that choice}, when
        the answer was scored; {} for generated answers."""
        if not result.scores or len(result.scores) < 2:
            return {}
        gold = self.kind.gold(ex.data)
        n = len(result.scores)
        preds = [self.kind.prediction_from_choice(ex.data, self.labels, k) for k in range(n)]
        if gold not in preds:
            return {}
        g = preds.index(gold)
        other = max((k for k in range(n) if k != g), key=lambda k: result.scores[k])  # type: ignore[index]
        return {"margin": round(result.scores[g] - result.scores[other], 4), "runner_up": preds[other]}

    # ------------------------------------------------------------------ teacher

    def max_shots(self, wanted: int) -> int:
        """`wanted`, capped by the card's `teacher.max_shots` (long examples overflow a small context)."""
        cap = self.teacher.get("max_shots")
        return min(wanted, int(cap)) if cap is not None else wanted

    def shot_template(self) -> str:
        """How one example is written in a shots prompt (`teacher.shot`; default: the `new` template)."""
        return str(self.teacher.get("shot") or self.teacher["new"])

    @staticmethod
    def _compile_template(template: str) -> re.Pattern[str]:
        """A card template read backwards: each {field} becomes a lazy capture group."""
        parts = []
        for literal, name, _, _ in string.Formatter().parse(template):
            parts.append(re.escape(literal).replace("\\\n", r"\s*\n\s*").replace("\\ ", r"\s*"))
            if name:
                parts.append(f"(?P<{name}>.+?)")
        return re.compile(r"\s*" + "".join(parts) + r"\s*$", re.DOTALL)

    def teacher_sampling(self, seed: int) -> Sampling:
        return Sampling(
            temperature=float(self.teacher.get("temperature", 0.8)),
            top_p=float(self.teacher.get("top_p", 0.95)),
            max_tokens=int(self.teacher.get("max_tokens", 128)),
            seed=seed,
            stop=tuple(self.teacher.get("stop", ["\n\n"])),
        )

    def teacher_prompt(self, seed_ex: Example, wrong_prediction: str | None) -> TeacherPrompt:
        """The augmentation prompt: instruction, one worked example, then the wrong seed example."""
        t = self.teacher
        example = t["example"]
        ex_orig = Example("card-example", self.kind.validate(dict(example["original"]), self.labels,
                                                             Where(str(self.path))))
        ex_new = Example("card-example-new", self.kind.validate(dict(example["new"]), self.labels,
                                                                Where(str(self.path))))
        ex_f = dict(self._fields(ex_orig), wrong=str(example.get("wrong", "")))
        seed_f = dict(self._fields(seed_ex), wrong=self.readable(wrong_prediction))
        new_tpl = str(t["new"])
        prefix = _template_prefix(new_tpl)
        shot_orig = t["original"].format(**ex_f).rstrip("\n")
        shot_new = new_tpl.format(**self._fields(ex_new)).rstrip("\n")
        seed_orig = t["original"].format(**seed_f).rstrip("\n")
        instruction = t["instruction"].strip()
        # No trailing space: SentencePiece models write the space as part of the next word's token, and a
        # prompt ending in a bare space pushes a base model towards digits and fragments.
        prompt = f"{instruction}\n\n{shot_orig}\n{shot_new}\n\n{seed_orig}\n{prefix.rstrip(' ')}"
        messages = (
            ("system", instruction),
            ("user", shot_orig),
            ("assistant", shot_new),
            ("user", seed_orig),
        )
        digest = hashlib.sha256(json.dumps([prompt, messages]).encode()).hexdigest()[:16]
        return TeacherPrompt(prompt=prompt, messages=messages, prefix=prefix, prompt_hash=digest)

    def shots_prompt(self, seed_ex: Example, shots: list[Example]) -> TeacherPrompt:
        """A class-conditional list prompt: other seed examples like `seed_ex` (same label), it last.

        Why: the paper's prompt (instruction + one worked example) is written for an instruction model.
        A small base model copies the worked example's *form* (a NUM "How many..." question under every
        label) and ignores the label; continuing a list of same-label examples keeps it on the label.
        """
        tpl = self.shot_template()
        header_tpl = str(self.teacher.get("shots_header") or "")
        header = header_tpl.format(**self._fields(seed_ex)).strip() if header_tpl else ""
        sep = "\n\n" if "\n" in tpl.strip() else "\n"
        blocks = [tpl.format(**self._fields(e)).strip("\n") for e in [*shots, seed_ex]]
        prefix = _template_prefix(tpl)
        prompt = (f"{header}\n\n" if header else "") + sep.join(blocks) + sep + prefix.rstrip(" ")
        instruction = header or str(self.teacher["instruction"]).strip()
        messages = (("system", instruction),
                    ("user", sep.join(blocks) + "\n\nWrite one more, different example in exactly this format."))
        digest = hashlib.sha256(json.dumps([prompt, messages]).encode()).hexdigest()[:16]
        return TeacherPrompt(prompt=prompt, messages=messages, prefix=prefix, prompt_hash=digest,
                             template="shot")

    def verify_prompt(self, candidate: Example, shots: list[Example]) -> str | None:
        """A few-shot prompt in the student's own format that asks the teacher to answer `candidate`.

        None for kinds without a discrete answer to compare (math: the arithmetic check is its verifier).
        """
        if not self.kind.scored:
            return None
        parts = []
        for e in shots:
            item = self.train_item(e)
            parts.append(item.prompt + item.completion)
        parts.append(self.train_item(candidate).prompt)
        return "\n\n".join(parts)

    def verify_sampling(self) -> Sampling:
        # Greedy and short: one answer per candidate, deterministic, so the cache serves reruns.
        longest = max((len(w.split()) for w in self.labels.values()), default=4)
        return Sampling(temperature=0.0, top_p=1.0, max_tokens=max(8, 3 * longest + 4), seed=0,
                        stop=("\n",))

    def parse_teacher(
        self, text: str, seed_ex: Example, prefix: str = "", template: str = "new"
    ) -> tuple[dict[str, Any] | None, str]:
        """A new row from the teacher's text (the completion after `prefix`), or (None, reason)."""
        if not isinstance(text, str) or not text.strip():
            return None, "parse: empty output"
        body = text if text.lstrip().startswith(prefix.strip()) and prefix.strip() else prefix + text
        pattern = self._shot_re if template == "shot" else self._new_re
        m = pattern.match(body.strip() + "\n") or pattern.match(body.strip())
        if not m:
            return None, "parse: output does not follow the card's 'new' format"
        parsed = {k: v.strip() for k, v in m.groupdict().items()}
        try:
            data, reason = self.kind.from_fields(parsed, seed_ex.data, self.labels)
        except (KeyError, ValueError, TypeError) as e:  # defensive: teacher text is arbitrary
            return None, f"parse: {type(e).__name__}"
        if data is not None and _norm(self.kind.dedup_text(data)) in self._example_texts():
            # Small base models often repeat the few-shot example verbatim, whatever the seed's label.
            return None, "copy: the card's worked example"
        return data, reason

    def _example_texts(self) -> set[str]:
        ex = self.teacher["example"]
        texts = set()
        for key in ("original", "new"):
            try:
                texts.add(_norm(self.kind.dedup_text(self.kind.validate(dict(ex[key]), self.labels, Where()))))
            except UserError:
                pass
        return texts


# ---------------------------------------------------------------------- loading


def builtin_task_names() -> list[str]:
    return sorted(p.stem for p in (project_root() / "tasks").glob("*.yaml"))


def load_task(name_or_path: str | Path, data_dir: str | Path | None = None) -> Task:
    """A task by built-in name ('trec', 'demo', ...) or by the path of the user's own card."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = project_root() / "tasks" / f"{name_or_path}.yaml"
        if not p.is_file():
            raise UserError(f"unknown task '{name_or_path}' (built in: {', '.join(builtin_task_names())}; "
                            "or give the path of a .yaml task card)")
    if not p.is_file():
        raise UserError("task card not found", file=p)
    raw = load_yaml(p.read_text(encoding="utf-8"), p)
    if not isinstance(raw, dict):
        raise UserError("a task card must be a YAML mapping", file=p)
    return Task(raw, p, data_dir)
