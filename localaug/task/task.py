"""A task: a YAML card (data files, fields, labels, prompts), never a fork of the pipeline.

`Task` reads and validates the card's data, renders a row into the student's training pair and
evaluation query, and judges the student's answers. What the teacher is asked, and how its text is read
back, lives in `prompts.py` (`prompts_of(task)`). The card's keys are documented in docs/task-cards.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cards import builtin_card, builtin_dir, builtin_names
from ..data import data_root, read_rows
from ..errors import UserError
from ..protocols import EvalItem, EvalResult, TrainItem, best_choice
from ..schema import load_yaml_model
from .card import BUILTIN_PREFIX, TaskCard
from .kinds import KINDS, Kind, Where


@dataclass(frozen=True)
class Example:
    """One row in canonical fields (see kinds.py), with its id and where it came from."""

    id: str
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False, repr=False)  # in the user's file, for messages

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.data, **({"meta": self.meta} if self.meta else {})}

    @staticmethod
    def from_json(row: dict[str, Any]) -> Example:
        data = {k: v for k, v in row.items() if k not in ("id", "meta")}
        return Example(id=str(row["id"]), data=data, meta=dict(row.get("meta") or {}))


@dataclass
class Judged:
    """The student's answers to a list of examples, judged: one row each, plus the count right."""

    rows: list[dict[str, Any]]
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.rows) if self.rows else 0.0

    @property
    def wrong(self) -> int:
        return len(self.rows) - self.correct


class Task:
    def __init__(self, card: TaskCard, path: Path, data_dir: str | Path | None = None) -> None:
        self.card = card
        self.path = path
        self.name: str = card.name or path.stem
        self.kind: Kind = KINDS[card.kind]
        self.labels: dict[str, str] = dict(card.labels)
        self.defaults = card.defaults
        self._data_dir = data_dir
        # Per file read: (line, line of the earlier identical row) for each exact duplicate row.
        self.duplicates: dict[str, list[tuple[int, int]]] = {}

    # ------------------------------------------------------------------ data

    def data_folder(self) -> Path:
        d = self.card.data.dir or self.name
        if d.startswith(BUILTIN_PREFIX):
            return builtin_dir("tasks") / d[len(BUILTIN_PREFIX):]
        p = Path(d).expanduser()
        return p if p.is_absolute() else data_root(self._data_dir) / p

    def split_path(self, split: str) -> Path:
        splits = self.card.data.splits
        if split not in splits:
            raise UserError(f"task '{self.name}' has no '{split}' split (has: {', '.join(splits)})",
                            file=self.path, field="data.splits")
        return self.data_folder() / splits[split]

    def splits(self) -> list[str]:
        return list(self.card.data.splits)

    def load_split(self, split: str) -> list[Example]:
        return self.read_file(self.split_path(split), id_prefix=split)

    def read_file(self, path: Path, id_prefix: str | None = None) -> list[Example]:
        """Rows of a user file (card field names) or of our own JSONL (canonical names), validated."""
        mapping = self.card.data.fields
        id_field = self.card.data.id_field
        prefix = id_prefix or Path(path).stem
        out, seen, first = [], set(), {}
        drop = self.card.data.duplicates == "drop"
        self.duplicates[str(path)] = []
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
            same = first.setdefault(_content_key(data), line)
            if same != line:  # an exact duplicate of an earlier row
                self.duplicates[str(path)].append((line, same))
                if drop:
                    continue
            out.append(Example(ex_id, data, dict(row.get("meta") or {}), line=line))
        if id_prefix == "train":
            self.kind.check_training_rows([e.data for e in out], str(path))
        return out

    def label_of(self, ex: Example) -> str | None:
        return self.kind.label(ex.data)

    def stratify(self) -> Any:
        """The key seed draws are stratified by (labels of a classifier), or None."""
        return self.label_of if self.kind.has_classes else None

    def dedup_text(self, ex: Example) -> str:
        return self.kind.dedup_text(ex.data)

    # ------------------------------------------------------------------ student

    def fields(self, ex: Example) -> dict[str, str]:
        """The template fields of a row ({text}, {label_word}, ...)."""
        return self.kind.fields(ex.data, self.labels)

    def train_item(self, ex: Example) -> TrainItem:
        f = self.fields(ex)
        return TrainItem(self.card.student.prompt.format(**f), self.card.student.answer.format(**f))

    def student_texts(self, ex: Example) -> tuple[str, list[str]]:
        """The student's prompt for a row and every answer it is trained or scored on after it."""
        item = self.train_item(ex)
        answers = [item.completion]
        if self.kind.has_choices:
            answers += [self.card.student.answer.format(**cf) for cf in self.kind.choice_fields(ex.data, self.labels)]
        return item.prompt, answers

    def eval_mode(self, requested: str | None = None) -> str:
        mode = requested or self.defaults.eval_mode or ("score" if self.kind.has_choices else "generate")
        if mode == "score" and not self.kind.has_choices:
            raise UserError(f"task '{self.name}' ({self.kind.name}) can only be evaluated by generation",
                            field="eval_mode")
        return mode

    def eval_item(self, ex: Example, mode: str = "score") -> EvalItem:
        s = self.card.student
        prompt = s.prompt.format(**self.fields(ex))
        if mode == "score":
            choices = tuple(s.answer.format(**cf) for cf in self.kind.choice_fields(ex.data, self.labels))
            return EvalItem(prompt, choices=choices)
        return EvalItem(prompt, max_new_tokens=s.max_new_tokens, stop=tuple(s.stop))

    def per_byte(self, ex: Example, result: EvalResult) -> EvalResult:
        """A scored answer with its choices compared by log-likelihood per byte, where the kind says so (a
        sum favours the shortest choice); any other answer as it is."""
        if not self.kind.length_normalised or not result.scores or result.choice_index is None:
            return result
        texts = self.eval_item(ex, "score").choices or ()
        scores = [s / max(len(t.encode()), 1) for s, t in zip(result.scores, texts, strict=True)]
        best = best_choice(scores)
        return EvalResult(texts[best], choice_index=best, scores=scores)

    def judge(self, ex: Example, result: EvalResult) -> tuple[str | None, bool]:
        """(prediction, correct) for one student answer."""
        return self._judge(ex, self.per_byte(ex, result))

    def judge_all(self, examples: list[Example], results: list[EvalResult]) -> Judged:
        """Judge a student's answers: one row per example (prediction, gold, correct, output, margin)."""
        rows, correct = [], 0
        for ex, res in zip(examples, results, strict=True):
            res = self.per_byte(ex, res)
            pred, ok = self._judge(ex, res)
            correct += ok
            row = {"id": ex.id, "prediction": pred, "gold": self.kind.gold(ex.data), "correct": ok,
                   "output": res.output}
            row.update(self._margin(ex, res))
            rows.append(row)
        return Judged(rows, correct)

    def readable(self, prediction: str | None) -> str:
        return self.kind.readable(prediction, self.labels)

    def _judge(self, ex: Example, result: EvalResult) -> tuple[str | None, bool]:
        if result.choice_index is not None:
            pred: str | None = self.kind.prediction_from_choice(ex.data, self.labels, result.choice_index)
        else:
            pred = self.kind.prediction_from_text(ex.data, self.labels, result.output)
        return pred, self.kind.is_correct(ex.data, pred)

    def _margin(self, ex: Example, result: EvalResult) -> dict[str, Any]:
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


def _content_key(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------- loading


def builtin_task_names() -> list[str]:
    return builtin_names("tasks")


def load_task(name_or_path: str | Path, data_dir: str | Path | None = None) -> Task:
    """A task by built-in name ('trec', 'demo', ...) or by the path of the user's own card."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        found = builtin_card("tasks", str(name_or_path))
        if found is None:
            raise UserError(f"unknown task '{name_or_path}' (built in: {', '.join(builtin_task_names())}; "
                            "or give the path of a .yaml task card)")
        p = found
    card = load_yaml_model(TaskCard, p, "task card")
    return Task(card, p, data_dir)
