"""The three task kinds of the paper: what a row holds, how it is judged, and how its text is spelled.

A kind turns a row into named string fields for the card's templates (`fields`) and back
(`from_fields`). Student prompts, student answers, teacher prompts and teacher-output parsing are all
templates over these fields, so a new task is a YAML card, never new code. Everything that differs from
one kind to another is here, on the kind: a new kind is a class in this module and its name in the card
schema (card.py), nothing in the task, the prompts, the verifier or the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..protocols import Sampling
from .maths import (
    CALCULATION_RE,
    final_answer,
    final_number,
    normalise_solution,
    numbers_equal,
    predicted_number,
    wrong_calculations,
)


@dataclass(frozen=True)
class Where:
    """Where a row came from, for error messages."""

    file: str | None = None
    line: int | None = None


def _need_str(data: dict[str, Any], key: str, where: Where) -> str:
    if key not in data or data[key] is None:
        raise UserError("missing field", file=where.file, line=where.line, field=key)
    value = data[key]
    if not isinstance(value, str):
        raise UserError(f"expected text, got {type(value).__name__}", file=where.file, line=where.line,
                        field=key)
    if not value.strip():
        raise UserError("empty text", file=where.file, line=where.line, field=key)
    return value


class Kind:
    name = ""
    fields_in_file: tuple[str, ...] = ()  # canonical fields a row must carry
    # True: every row carries one of the card's labels, a class: seed draws keep each class's share, and
    # the teacher's examples are picked from the target's class (list prompt) or from every class (verifier).
    has_classes = False
    answer_shape = ""  # how answers look, for `localaug tasks` when the card lists no labels
    # True: a row's answer is one of a few choices, so the student can be scored on them and the teacher,
    # as a labeller, constrained to them; False: the answer is written out.
    has_choices = False
    teacher_check = ""  # what the verifier does, as a run's summary names it
    # True: choices are free text of different lengths, compared by log-likelihood per byte (acc_norm in
    # lm-evaluation-harness), because a sum favours the shortest choice whatever it says.
    length_normalised = False

    def validate(self, data: dict[str, Any], labels: dict[str, str], where: Where) -> dict[str, Any]:
        raise NotImplementedError

    def check_labels(self, labels: dict[str, str]) -> None:
        """The card's label list, checked when the card is read (ValueError: what is wrong)."""

    def check_training_rows(self, rows: list[dict[str, Any]], file: str) -> None:
        """The training split as a whole (UserError: what it lacks), after each row was validated."""

    def label(self, data: dict[str, Any]) -> str | None:
        """Stratification key (None: no stratification)."""
        return None

    def fields(self, data: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def from_fields(self, parsed: dict[str, str], seed: dict[str, Any], labels: dict[str, str]
                    ) -> tuple[dict[str, Any] | None, str]:
        """A new row from parsed teacher fields, or (None, reason)."""
        raise NotImplementedError

    def choice_fields(self, data: dict[str, Any], labels: dict[str, str]) -> list[dict[str, str]]:
        """Field sets for each candidate answer (scoring); empty for generative kinds."""
        return []

    def prediction_from_choice(self, data: dict[str, Any], labels: dict[str, str], index: int) -> str:
        raise NotImplementedError

    def prediction_from_text(self, data: dict[str, Any], labels: dict[str, str], text: str) -> str | None:
        raise NotImplementedError

    def gold(self, data: dict[str, Any]) -> str:
        raise NotImplementedError

    def is_correct(self, data: dict[str, Any], prediction: str | None) -> bool:
        return prediction is not None and prediction == self.gold(data)

    def readable(self, prediction: str | None, labels: dict[str, str]) -> str:
        """How a prediction is shown to the teacher (label words rather than codes)."""
        return "(no answer)" if prediction is None else prediction

    def dedup_text(self, data: dict[str, Any]) -> str:
        raise NotImplementedError

    def worked_answer(self, data: dict[str, Any]) -> str | None:
        """The working a row shows beside its answer (a maths solution), for people reading it; else None."""
        return None

    # The teacher as a labeller of a kind without choices (the verifier, the preflight): it answers the row
    # itself, greedily, and its answer is read like a student's.
    solve_sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=384, seed=0)

    def solve_messages(self, data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """The chat turns that ask an instruction model to answer the row."""
        raise NotImplementedError

    def read_solution(self, text: str) -> str | None:
        """The answer in the teacher's text, as a prediction."""
        raise NotImplementedError


class Classification(Kind):
    name = "classification"
    fields_in_file = ("text", "label")
    has_choices = True
    has_classes = True
    teacher_check = "teacher (label)"

    def validate(self, data, labels, where):
        text = _need_str(data, "text", where)
        if "label" not in data or data["label"] is None:
            raise UserError("missing field", file=where.file, line=where.line, field="label")
        label = str(data["label"])
        if label not in labels:
            # Accept the readable word too (e.g. "description" for DESC).
            by_word = {w.lower(): k for k, w in labels.items()}
            if label.lower() in by_word:
                label = by_word[label.lower()]
            else:
                shown = ", ".join(list(labels)[:12])
                raise UserError(f"unknown label '{label}' (expected one of: {shown})", file=where.file,
                                line=where.line, field="label")
        return {"text": text, "label": label}

    def check_labels(self, labels):
        if len(labels) < 2:
            raise ValueError("a classification task needs at least two labels")

    def check_training_rows(self, rows, file):
        found = {d["label"] for d in rows}
        if len(found) < 2:
            raise UserError(f"only one label ({', '.join(found)}) in the training data; a classifier needs at "
                            "least two", file=file, field="label")

    def label(self, data):
        return data["label"]

    def fields(self, data, labels):
        return {"text": data["text"], "label": data["label"], "label_word": labels[data["label"]]}

    def from_fields(self, parsed, seed, labels):
        text = parsed.get("text", "").strip()
        if not text:
            return None, "parse: empty text"
        if text.lower() == seed["text"].strip().lower():
            return None, "copy: same text as the seed example"
        label = seed["label"]
        if "label_word" in parsed or "label" in parsed:
            raw = (parsed.get("label") or parsed.get("label_word") or "").strip()
            match = self.prediction_from_text(seed, labels, raw)
            if match is None:
                return None, f"label: '{raw[:40]}' is not in the label set"
            if match != label:
                return None, f"label: teacher wrote '{labels[match]}', the seed is '{labels[label]}'"
        return {"text": text, "label": label}, ""

    def choice_fields(self, data, labels):
        return [dict(self.fields(data, labels), label=code, label_word=word) for code, word in labels.items()]

    def prediction_from_choice(self, data, labels, index):
        return list(labels)[index]

    def prediction_from_text(self, data, labels, text):
        first = text.strip().splitlines()[0].strip().strip(".").lower() if text.strip() else ""
        for code, word in labels.items():
            if first == word.lower() or first == code.lower():
                return code
        for code, word in labels.items():  # lenient: the label word starts the answer
            if first.startswith(word.lower()):
                return code
        return None

    def gold(self, data):
        return data["label"]

    def readable(self, prediction, labels):
        return labels.get(prediction, prediction) if prediction is not None else "(no answer)"

    def dedup_text(self, data):
        return data["text"]


N_ENDINGS = 5


class MultipleChoice(Kind):
    name = "multiple_choice"
    fields_in_file = ("context", "endings", "label")
    has_choices = True
    teacher_check = "teacher (label)"
    answer_shape = f"{N_ENDINGS} endings"
    length_normalised = True  # CaseHOLD's endings run from 30 to 300+ characters

    def validate(self, data, labels, where):
        context = _need_str(data, "context", where)
        endings = data.get("endings")
        if endings is None:
            raise UserError("missing field", file=where.file, line=where.line, field="endings")
        if not isinstance(endings, list) or len(endings) != N_ENDINGS:
            n = len(endings) if isinstance(endings, list) else type(endings).__name__
            raise UserError(f"expected a list of {N_ENDINGS} endings, got {n}", file=where.file,
                            line=where.line, field="endings")
        for i, e in enumerate(endings):
            if not isinstance(e, str) or not e.strip():
                raise UserError(f"ending {i} is empty or not text", file=where.file, line=where.line,
                                field="endings")
        label = data.get("label")
        try:
            label_i = int(label)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UserError(f"expected an index 0..4, got {label!r}", file=where.file, line=where.line,
                            field="label") from None
        if not 0 <= label_i < N_ENDINGS or str(label).strip() not in {str(label_i), f"{label_i}.0"}:
            raise UserError(f"expected an index 0..4, got {label!r}", file=where.file, line=where.line,
                            field="label")
        return {"context": context, "endings": list(endings), "label": label_i}

    def label(self, data):
        return str(data["label"])

    def fields(self, data, labels):
        f = {"context": data["context"], "label": str(data["label"]),
             "correct_ending": data["endings"][data["label"]]}
        for i, e in enumerate(data["endings"]):
            f[f"ending{i}"] = e
        return f

    def from_fields(self, parsed, seed, labels):
        context = parsed.get("context", "").strip()
        endings = [parsed.get(f"ending{i}", "").strip() for i in range(N_ENDINGS)]
        if not context:
            return None, "parse: empty context"
        if any(not e for e in endings):
            return None, "parse: fewer than 5 endings"
        try:
            label = int(parsed.get("label", "").strip())
        except ValueError:
            return None, "label: not an index 0..4"
        if not 0 <= label < N_ENDINGS:
            return None, "label: not an index 0..4"
        if sum(e.lower() == endings[label].lower() for e in endings) > 1:
            return None, "label: the correct ending is not distinct"
        if context.lower() == seed["context"].strip().lower():
            return None, "copy: same context as the seed example"
        return {"context": context, "endings": endings, "label": label}, ""

    def choice_fields(self, data, labels):
        base = self.fields(data, labels)
        return [dict(base, label=str(i), correct_ending=e) for i, e in enumerate(data["endings"])]

    def prediction_from_choice(self, data, labels, index):
        return str(index)

    def prediction_from_text(self, data, labels, text):
        m = re.search(r"[0-4]", text)
        if m:
            return m.group(0)
        low = text.strip().lower()
        for i, e in enumerate(data["endings"]):
            if low and (low.startswith(e.lower()[:40]) or e.lower().startswith(low[:40])):
                return str(i)
        return None

    def gold(self, data):
        return str(data["label"])

    def dedup_text(self, data):
        return data["context"] + "\n" + "\n".join(data["endings"])


SOLVE_SYSTEM = ("Solve the maths word problem step by step. Mark each calculation as <<expression=result>> and "
                "end with a line '#### ' followed by the final number.")


class Math(Kind):
    name = "math"
    teacher_check = "teacher (solves it again)"
    answer_shape = "#### number"
    fields_in_file = ("question", "answer")
    solve_sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=384, seed=0, stop=("\n\n\n", "\nProblem:"))

    def validate(self, data, labels, where):
        question = _need_str(data, "question", where)
        answer = _need_str(data, "answer", where)
        if final_answer(answer) is None:
            raise UserError("answer has no final '#### <number>' line", file=where.file, line=where.line,
                            field="answer")
        return {"question": question, "answer": answer}

    def fields(self, data, labels):
        return {"question": data["question"], "answer": data["answer"],
                "final": final_answer(data["answer"]) or ""}

    def from_fields(self, parsed, seed, labels):
        question = parsed.get("question", "").strip()
        answer = normalise_solution(parsed.get("answer", ""))
        if not question:
            return None, "parse: empty question"
        if final_answer(answer) is None:
            return None, "parse: no '#### <number>' final answer"
        bad = wrong_calculations(answer)
        if bad:
            return None, f"arithmetic: {bad[0]}"
        # A solution whose final number is no calculation's result was not computed, only asserted (and
        # one with no calculations cannot be checked at all). 6% of GSM8K's own answers fail this rule;
        # of the 270M teacher's output that passed the check above, every one read by hand was wrong.
        results = [r for _, r in CALCULATION_RE.findall(answer)]
        final = final_answer(answer) or ""
        if not any(numbers_equal(r, final) for r in results):
            return None, "arithmetic: the final answer is not the result of any <<calculation>>"
        if question.lower() == seed["question"].strip().lower():
            return None, "copy: same question as the seed example"
        return {"question": question, "answer": answer}, ""

    def prediction_from_text(self, data, labels, text):
        return predicted_number(text)

    def gold(self, data):
        return final_answer(data["answer"]) or ""

    def is_correct(self, data, prediction):
        return prediction is not None and numbers_equal(prediction, self.gold(data))

    def dedup_text(self, data):
        return data["question"]

    def worked_answer(self, data):
        answer = data.get("answer")
        return answer if isinstance(answer, str) else None

    def solve_messages(self, data):
        return (("system", SOLVE_SYSTEM), ("user", data["question"]))

    def read_solution(self, text):
        return final_number(text)


KINDS: dict[str, Kind] = {k.name: k for k in (Classification(), MultipleChoice(), Math())}
