"""Teacher verification (recipe `localaug`): a candidate is kept only if the teacher gives its label.

The generator and the verifier see different contexts (a list of one label vs. examples of every
label in the student's format), so a question written under the wrong label is usually caught: the
teacher answers with the label the question really asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .augment import request, request_seed
from .protocols import ProgressFn, Teacher
from .tasks import Example, Task

VERIFY_SYSTEM = "Continue the last block with its answer only, as in the blocks before it."


@dataclass
class Verified:
    accepted: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False  # the task's kind has no discrete answer to check (math)


def verify_with_teacher(
    task: Task,
    teacher: Teacher,
    candidates: Sequence[Example],
    pool: Sequence[Example],
    *,
    run_seed: int = 0,
    iteration: int = 0,
    per_label: int = 2,
    progress: ProgressFn | None = None,
) -> Verified:
    """Keep a candidate only if the teacher, asked few-shot in the student's format, gives its label."""
    result = Verified()
    if not candidates:
        return result
    prompts = task.prompts
    if prompts.verify(candidates[0], []) is None:
        return Verified(accepted=list(candidates), skipped=True)
    requests = []
    for c in candidates:
        shots = prompts.verify_shots([e for e in pool if e.id != c.meta.get("seed_id")], per_label,
                                     request_seed(run_seed, iteration, c.id, 0))
        prompt = prompts.verify(c, shots) or ""
        requests.append(request(teacher, prompt, (("system", VERIFY_SYSTEM), ("user", prompt)),
                                sampling=prompts.verify_sampling()))
    outputs = teacher.generate(requests, progress=progress)
    kind = task.kind
    for c, comps in zip(candidates, outputs, strict=True):
        text = comps[0].text if comps else ""
        pred = kind.prediction_from_text(c.data, task.labels, text)
        if kind.is_correct(c.data, pred):
            result.accepted.append(c)
        else:
            result.rejected.append({"seed_id": c.meta.get("seed_id"), "iteration": iteration, "id": c.id,
                                    "reason": f"verify: teacher answered {task.readable(pred)!r}, "
                                              f"not {task.readable(kind.gold(c.data))!r}",
                                    "verifier_output": text[:200], "example": c.to_json()})
    return result
