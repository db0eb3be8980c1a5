"""Augmentation: turn each wrong seed example into new, validated training examples via the teacher.

Only seed examples reach the teacher (never test data). Every request's sampling seed is derived from
(run seed, iteration, seed example id, attempt), so a rerun asks the very same questions and the
teacher cache answers them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .protocols import GenerationRequest, ProgressFn, Teacher
from .tasks import Example, Task


@dataclass
class WrongExample:
    example: Example
    prediction: str | None  # what the student answered (readable form is rendered by the task)


@dataclass
class AugmentResult:
    accepted: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"seed_id", "reason", "text", ...}
    completions: int = 0
    completion_tokens: int = 0
    cached: int = 0
    seconds: float = 0.0

    @property
    def parse_failure_rate(self) -> float:
        return len(self.rejected) / self.completions if self.completions else 0.0


def request_seed(run_seed: int, iteration: int, example_id: str, attempt: int) -> int:
    h = hashlib.sha256(f"{run_seed}/{iteration}/{example_id}/{attempt}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def augment(
    task: Task,
    teacher: Teacher,
    wrong: Sequence[WrongExample],
    *,
    iteration: int,
    per_wrong: int = 1,
    run_seed: int = 0,
    max_retries: int = 2,
    progress: ProgressFn | None = None,
) -> AugmentResult:
    """Ask the teacher for `per_wrong` new examples per wrong seed example; parse and validate them.

    A wrong example whose samples all fail validation is asked again (new sampling seed) up to
    `max_retries` times. All requests of one round go to the teacher in one batch.
    """
    result = AugmentResult()
    pending = list(wrong)
    total = len(pending) * per_wrong
    done = 0
    for attempt in range(max_retries + 1):
        if not pending:
            break
        prompts, requests = [], []
        for w in pending:
            tp = task.teacher_prompt(w.example, w.prediction)
            sampling = task.teacher_sampling(request_seed(run_seed, iteration, w.example.id, attempt))
            if teacher.prefers_completion:
                req = GenerationRequest(sampling=sampling, prompt=tp.prompt, n=per_wrong)
            else:
                req = GenerationRequest(sampling=sampling, messages=tp.messages, n=per_wrong)
            prompts.append(tp)
            requests.append(req)

        def round_progress(d: int, t: int, info: dict[str, Any], _base: int = done) -> None:
            if progress:
                progress(min(_base + d, total), total,
                         dict(info, accepted=len(result.accepted), rejected=len(result.rejected)))

        outputs = teacher.generate(requests, progress=round_progress)
        still_pending = []
        for w, tp, comps in zip(pending, prompts, outputs, strict=True):
            got_one = False
            for k, comp in enumerate(comps):
                result.completions += 1
                result.completion_tokens += comp.completion_tokens
                result.cached += int(comp.cached)
                result.seconds += comp.seconds
                # The completion continues `prefix` (e.g. "New question: "); chat replies restate it.
                data, reason = task.parse_teacher(comp.text, w.example, tp.prefix)
                if data is None:
                    result.rejected.append({"seed_id": w.example.id, "iteration": iteration,
                                            "attempt": attempt, "sample": k, "reason": reason,
                                            "text": comp.text[:2000], "finish_reason": comp.finish_reason})
                    continue
                got_one = True
                new_id = f"aug{iteration:02d}-{w.example.id}-a{attempt}s{k}"
                result.accepted.append(Example(new_id, data, {
                    "origin": "teacher", "seed_id": w.example.id, "iteration": iteration,
                    "attempt": attempt, "sample": k, "prompt_hash": tp.prompt_hash,
                    "teacher": teacher.identity,
                }))
            if not got_one:
                still_pending.append(w)
        done = min(total, done + len(pending) * per_wrong)
        pending = still_pending
    if progress:
        progress(total, total, {"accepted": len(result.accepted), "rejected": len(result.rejected)})
    return result
