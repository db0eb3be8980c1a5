"""Teacher verification (recipe `localaug`) and the teacher preflight: the teacher as a labeller.

A candidate is kept only if the teacher, shown seed examples of every label in the student's own format,
gives the label the candidate was written for. The generator and the verifier see different contexts (a
list of one label vs. examples of every label), so a question written under the wrong label is usually
caught: the teacher answers with the label the question really asks for.

The teacher must *choose among the labels*, not answer the question: the request is a completion prompt
ending where the student's answer starts, constrained to the exact answers the student scores
(`GenerationRequest.choices`). Measured with Qwen2.5-Coder-1.5B-Instruct (docs/RESULTS.md): as a chat
turn it answered the question itself ("France"); as a completion constrained to the label words it
labels 67% (TREC), 93% (SNIPS), 96% (SST-2) of test rows right. For a kind without choices (maths) the
verifier is the teacher answering the candidate itself: it must reach the candidate's answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .augment import request_seed
from .protocols import GenerationRequest, ProgressFn, Sampling, Teacher
from .style import TextStyle
from .task import Example, Task
from .task.prompts import prompts_of

# `refuse: true` (setting `refuse_non_examples`): the verifier may also answer that a candidate is no example
# of the task at all. Constrained to the labels alone, a refusal ("I'm sorry, but as an AI language model...")
# or a note about the examples still gets a label, and was kept (docs/RESULTS.md, "Label precision"). The
# teacher is shown what such an answer looks like: two made-up non-examples among the shots.
NOT_AN_EXAMPLE = " not an example"
NON_EXAMPLES = ("I am sorry, but I cannot write that for you as it would not be appropriate.",
                "Note: these were all written in the same style as the examples above.")


@dataclass
class Verified:
    accepted: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)  # the teacher's answer for each candidate


def shared_shots(task: Task, pool: Sequence[Example], exclude: set[str], per_label: int, seed: int) -> list[Example]:
    """One few-shot set for a whole batch of questions (`per_label` seed examples of every label, shuffled),
    so llama.cpp evaluates it once for all of them. `exclude`: seed examples that must not be shown (a
    candidate's own source, or the examples being labelled)."""
    pool = [e for e in pool if e.id not in exclude]
    rng = random.Random(seed)
    if not task.kind.has_classes:
        return rng.sample(pool, min(len(pool), prompts_of(task).max_shots(per_label * 2)))
    picked: list[Example] = []
    for label in task.labels:
        same = [e for e in pool if task.label_of(e) == label]
        picked += rng.sample(same, min(per_label, len(same)))
    rng.shuffle(picked)
    return picked


def label_request(task: Task, teacher: Teacher, example: Example, shots: list[Example],
                  non_examples: Sequence[tuple[int, str]] = ()) -> GenerationRequest:
    """Ask for `example`'s answer in the student's format, few-shot: constrained to the choices where the
    kind has them; else the teacher answers it itself (a chat model from the kind's own instruction).
    `non_examples`: (position among the shots, text) of shots answered NOT_AN_EXAMPLE, which the answer may be."""
    kind = task.kind
    if kind.has_choices:
        choices = task.eval_item(example, "score").choices or ()
        prompt = prompts_of(task).verify(example, shots)
        if non_examples:
            choices = (*choices, NOT_AN_EXAMPLE)
            prompt = _with_non_examples(task, example, shots, non_examples)
        longest = max(len(c) for c in choices)
        return GenerationRequest(prompt=prompt,
                                 sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=longest // 2 + 8, seed=0),
                                 choices=choices)
    if teacher.prefers_completion:
        return GenerationRequest(prompt=prompts_of(task).verify(example, shots), sampling=kind.solve_sampling)
    return GenerationRequest(messages=kind.solve_messages(example.data), sampling=kind.solve_sampling)


def _with_non_examples(task: Task, example: Example, shots: list[Example],
                       non_examples: Sequence[tuple[int, str]]) -> str:
    """The verify prompt with the non-example shots placed among the real ones (the same for a whole batch)."""
    items = [task.train_item(e) for e in shots]
    parts = [item.prompt + item.completion for item in items]
    for pos, text in sorted(non_examples):
        fake = Example("non-example", {**example.data, "text": text}, {})
        parts.insert(pos, task.train_item(fake).prompt + NOT_AN_EXAMPLE)
    parts.append(task.train_item(example).prompt)
    return "\n\n".join(parts)


def non_example_shots(task: Task, pool: Sequence[Example], n_shots: int, seed: int) -> list[tuple[int, str]]:
    """Where the made-up non-examples go among `n_shots` shots, written in the seeds' style (lower-cased for
    SST-2, as the candidates are once `match_style` rewrote them). Classification tasks only."""
    if task.kind.name != "classification":
        return []
    style = TextStyle.learn(task.kind.dedup_text(e.data) for e in pool)
    rng = random.Random(seed)
    return [(rng.randint(0, n_shots + k), style.apply(text)) for k, text in enumerate(NON_EXAMPLES)]


def read_answer(task: Task, example: Example, text: str) -> str | None:
    """The teacher's answer as a prediction: the choice it picked, else whatever the text says."""
    kind = task.kind
    if kind.has_choices:
        if text.strip() == NOT_AN_EXAMPLE.strip():  # the verifier refused it as no example of the task
            return None
        choices = task.eval_item(example, "score").choices or ()
        stripped = [c.strip() for c in choices]
        if text.strip() in stripped:
            return kind.prediction_from_choice(example.data, task.labels, stripped.index(text.strip()))
        return kind.prediction_from_text(example.data, task.labels, text)
    return kind.read_solution(text)


def label_with_teacher(task: Task, teacher: Teacher, examples: Sequence[Example], shots: list[Example],
                       progress: ProgressFn | None = None, non_examples: Sequence[tuple[int, str]] = ()
                       ) -> list[tuple[str | None, str]]:
    """(answer, raw text) of the teacher for each example."""
    requests = [label_request(task, teacher, e, shots, non_examples) for e in examples]
    outputs = teacher.generate(requests, progress=progress)
    texts = [comps[0].text if comps else "" for comps in outputs]
    return [(read_answer(task, e, t), t) for e, t in zip(examples, texts, strict=True)]


def verify_with_teacher(
    task: Task,
    teacher: Teacher,
    candidates: Sequence[Example],
    pool: Sequence[Example],
    *,
    run_seed: int = 0,
    iteration: int = 0,
    per_label: int = 4,
    progress: ProgressFn | None = None,
    refuse: bool = False,
) -> Verified:
    """Keep a candidate only if the teacher's answer is the one it was written with. With `refuse`, the
    teacher may answer NOT_AN_EXAMPLE instead of a label (classification tasks)."""
    result = Verified()
    if not candidates:
        return result
    sources = {str(c.meta.get("seed_id")) for c in candidates}
    shots = shared_shots(task, pool, sources, per_label, request_seed(run_seed, iteration, "verify", 0))
    fakes = non_example_shots(task, pool, len(shots), request_seed(run_seed, iteration, "verify", 1)) if refuse else []
    kind = task.kind
    for c, (pred, text) in zip(candidates, label_with_teacher(task, teacher, candidates, shots, progress, fakes),
                               strict=True):
        result.answers.append(pred)
        if kind.is_correct(c.data, pred):
            result.accepted.append(c)
        else:
            said = "not an example" if fakes and text.strip() == NOT_AN_EXAMPLE.strip() else task.readable(pred)
            result.rejected.append({"seed_id": c.meta.get("seed_id"), "iteration": iteration, "id": c.id,
                                    "reason": f"verify: teacher answered {said!r}, "
                                              f"not {task.readable(kind.gold(c.data))!r}",
                                    "verifier_output": text[:300], "example": c.to_json()})
    return result


def teacher_accuracy(task: Task, teacher: Teacher, examples: Sequence[Example], *, seed: int = 0,
                     per_label: int = 4, folds: int = 2, progress: ProgressFn | None = None
                     ) -> tuple[float, list[dict[str, Any]]]:
    """The teacher's accuracy as a labeller on labelled `examples`, each asked with shots from the other
    folds only (it never sees the example it labels). (accuracy, one row per example)."""
    rng = random.Random(seed)
    order = list(examples)
    rng.shuffle(order)
    rows: list[dict[str, Any]] = []
    for f in range(folds):
        part = order[f::folds]
        if not part:
            continue
        shots = shared_shots(task, examples, {e.id for e in part}, per_label, seed + f)
        for e, (pred, text) in zip(part, label_with_teacher(task, teacher, part, shots, progress), strict=True):
            rows.append({"id": e.id, "prediction": pred, "gold": task.kind.gold(e.data),
                         "correct": task.kind.is_correct(e.data, pred), "output": text[:300]})
    correct = sum(r["correct"] for r in rows)
    return (correct / len(rows) if rows else 0.0), rows
