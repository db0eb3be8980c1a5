"""Teacher prompting for one task, in one place: what the teacher is asked and how its text is read back.

Three prompts, all built from the task card's templates:
- the paper's prompt: instruction, one worked example, then the wrong seed example (`paper`);
- the list prompt: seed examples of the wrong one's label, it last, then an open slot (`listing`);
- the verifier's prompt: seed examples of every label in the student's own format, then a candidate
  whose label the teacher must give (`verify`).
Each comes as a completion prompt (base models) and as chat turns (instruction models).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..protocols import Sampling
from .kinds import Where
from .task import Example, Task


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


def template_prefix(template: str) -> str:
    """The literal text before a template's first field: where a completion prompt leaves off."""
    first_field = next(iter(_template_fields(template)), None)
    return template.split("{" + first_field + "}")[0] if first_field else template


def _compile_template(template: str) -> re.Pattern[str]:
    """A card template read backwards: each {field} becomes a lazy capture group.

    A line break before a label (the one before "Solution: ") may be any whitespace: chat models often
    run the label on in the same line ("...How much is left? Solution: ..."). A bare line break between
    two fields stays a line break, the only thing that separates them."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        newline = r"\s+" if literal.strip() else r"\s*\n\s*"
        parts.append(re.escape(literal).replace("\\\n", newline).replace("\\ ", r"\s*"))
        if name:
            parts.append(f"(?P<{name}>.+?)")
    return re.compile(r"\s*" + "".join(parts) + r"\s*$", re.DOTALL)


def _digest(prompt: str, messages: tuple[tuple[str, str], ...]) -> str:
    return hashlib.sha256(json.dumps([prompt, messages]).encode()).hexdigest()[:16]


class Prompts:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.card = task.card.teacher
        self._new_re = _compile_template(self.card.new)
        self._shot_re = _compile_template(self.card.shot_template)

    # ------------------------------------------------------------------ generation

    def sampling(self, seed: int, chat: bool = False) -> Sampling:
        """The card's sampling. A chat reply may put blank lines inside one multi-line example ("Problem:
        ...\n\nSolution: ..."), so for chat, whitespace-only stops are dropped when examples span lines."""
        c = self.card
        stop = tuple(c.stop)
        if chat and "\n" in c.shot_template.strip():
            stop = tuple(s for s in stop if s.strip())
        return Sampling(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=seed, stop=stop)

    def max_shots(self, wanted: int) -> int:
        """`wanted`, capped by the card's `teacher.max_shots` (long examples overflow a small context)."""
        return min(wanted, self.card.max_shots) if self.card.max_shots is not None else wanted

    def for_target(self, target: Example, prediction: str | None, pool: Sequence[Example], shots: int,
                   seed: int) -> TeacherPrompt:
        """The paper's prompt (shots=0), or the list prompt with `shots` seed examples from `pool`."""
        if shots > 0:
            return self.listing(target, self.pick_shots(target, pool, self.max_shots(shots), seed))
        return self.paper(target, prediction)

    def pick_shots(self, target: Example, pool: Sequence[Example], k: int, seed: int) -> list[Example]:
        """Up to k other seed examples like `target` (same label for classification), in a seeded order."""
        label = self.task.label_of(target) if self.task.kind.has_classes else None
        same = [e for e in pool if e.id != target.id and (label is None or self.task.label_of(e) == label)]
        return random.Random(seed).sample(same, min(k, len(same)))

    def paper(self, seed_ex: Example, wrong_prediction: str | None) -> TeacherPrompt:
        """The augmentation prompt: instruction, one worked example, then the wrong seed example."""
        c, task = self.card, self.task
        ex_orig, ex_new = (task.kind.validate(dict(d), task.labels, Where(str(task.path)))
                           for d in (c.example.original, c.example.new))
        ex_f = dict(task.kind.fields(ex_orig, task.labels), wrong=c.example.wrong)
        seed_f = dict(task.fields(seed_ex), wrong=task.readable(wrong_prediction))
        prefix = template_prefix(c.new)
        shot_orig = c.original.format(**ex_f).rstrip("\n")
        shot_new = c.new.format(**task.kind.fields(ex_new, task.labels)).rstrip("\n")
        seed_orig = c.original.format(**seed_f).rstrip("\n")
        instruction = c.instruction.strip()
        # No trailing space: SentencePiece models write the space as part of the next word's token, and a
        # prompt ending in a bare space pushes a base model towards digits and fragments.
        prompt = f"{instruction}\n\n{shot_orig}\n{shot_new}\n\n{seed_orig}\n{prefix.rstrip(' ')}"
        messages = (("system", instruction), ("user", shot_orig), ("assistant", shot_new), ("user", seed_orig))
        return TeacherPrompt(prompt, messages, prefix, _digest(prompt, messages))

    def listing(self, seed_ex: Example, shots: list[Example]) -> TeacherPrompt:
        """A class-conditional list prompt: other seed examples like `seed_ex` (same label), it last.

        Why: the paper's prompt (instruction + one worked example) is written for an instruction model.
        A small base model copies the worked example's *form* (a NUM "How many..." question under every
        label) and ignores the label; continuing a list of same-label examples keeps it on the label.
        """
        tpl = self.card.shot_template
        fields = self.task.fields
        header = self.card.shots_header.format(**fields(seed_ex)).strip() if self.card.shots_header else ""
        sep = "\n\n" if "\n" in tpl.strip() else "\n"
        blocks = [tpl.format(**fields(e)).strip("\n") for e in [*shots, seed_ex]]
        prefix = template_prefix(tpl)
        prompt = (f"{header}\n\n" if header else "") + sep.join(blocks) + sep + prefix.rstrip(" ")
        instruction = header or self.card.instruction.strip()
        messages = (("system", instruction),
                    ("user", sep.join(blocks) + "\n\nWrite one more, different example in exactly this format."))
        return TeacherPrompt(prompt, messages, prefix, _digest(prompt, messages), template="shot")

    def parse(self, text: str, seed_ex: Example, prefix: str = "", template: str = "new"
              ) -> tuple[dict[str, Any] | None, str]:
        """A new row from the teacher's text (the completion after `prefix`), or (None, reason).

        `template` is the card template the answer follows: "new" (paper prompt) or "shot" (list prompt)."""
        if not isinstance(text, str) or not text.strip():
            return None, "parse: empty output"
        text = text.replace("**", "")  # chat models' markdown bold around "Question:" and the like
        body = text if text.lstrip().startswith(prefix.strip()) and prefix.strip() else prefix + text
        pattern = self._shot_re if template == "shot" else self._new_re
        m = pattern.match(body.strip() + "\n") or pattern.match(body.strip())
        one_line = "\n" not in (self.card.shot_template if template == "shot" else self.card.new).strip()
        if (m is None or "\n" in m.group(0).strip()) and one_line and prefix.strip():
            # A chat reply that wraps the example in other lines ("Sure! Here is one: ..."): its first line
            # in the template's form.
            lines = (ln.strip() for ln in text.splitlines())
            m = next((pattern.match(ln) for ln in lines if ln.startswith(prefix.strip())), None) or m
        if not m:
            return None, "parse: output does not follow the card's 'new' format"
        parsed = {k: v.strip() for k, v in m.groupdict().items()}
        first, head = next(iter(parsed), None), prefix.strip()
        if first and head and head in parsed[first]:
            # A chat reply's preamble before the example ("Sure! Here's another example:\n\nProblem: ..."):
            # the example starts after the last label.
            parsed[first] = parsed[first].rsplit(head, 1)[1].strip()
        kind = self.task.kind
        try:
            data, reason = kind.from_fields(parsed, seed_ex.data, self.task.labels)
        except (KeyError, ValueError, TypeError) as e:  # defensive: teacher text is arbitrary
            return None, f"parse: {type(e).__name__}"
        if data is not None and _norm(kind.dedup_text(data)) in self._example_texts:
            # Small base models often repeat the few-shot example verbatim, whatever the seed's label.
            return None, "copy: the card's worked example"
        return data, reason

    @property
    def _example_texts(self) -> set[str]:
        texts = set()
        for row in (self.card.example.original, self.card.example.new):
            try:
                data = self.task.kind.validate(dict(row), self.task.labels, Where())
            except UserError:
                continue
            texts.add(_norm(self.task.kind.dedup_text(data)))
        return texts

    # ------------------------------------------------------------------ verification

    def verify(self, candidate: Example, shots: list[Example]) -> str:
        """A few-shot prompt in the student's own format that asks the teacher to answer `candidate`."""
        parts = []
        for e in shots:
            item = self.task.train_item(e)
            parts.append(item.prompt + item.completion)
        parts.append(self.task.train_item(candidate).prompt)
        return "\n\n".join(parts)


@functools.lru_cache(maxsize=64)
def prompts_of(task: Task) -> Prompts:
    """The task's teacher prompting (its templates are compiled once per task)."""
    return Prompts(task)
