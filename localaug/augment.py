"""Augmentation: turn each wrong seed example into new, validated training examples via the teacher.

Only seed examples reach the teacher (never test data). Every request's sampling seed is derived from
(run seed, iteration, seed example id, attempt), so a rerun asks the very same questions and the
teacher cache answers them all.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .protocols import GenerationRequest, ProgressFn, Teacher
from .tasks import Example, Task, TeacherPrompt


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


def pick_shots(task: Task, target: Example, pool: Sequence[Example], k: int, seed: int) -> list[Example]:
    """Up to k other seed examples like `target` (same label for classification), in a seeded order."""
    label = task.label_of(target) if task.kind.name == "classification" else None
    same = [e for e in pool if e.id != target.id and (label is None or task.label_of(e) == label)]
    rng = random.Random(seed)
    return rng.sample(same, min(k, len(same)))


def build_prompt(task: Task, w: WrongExample, pool: Sequence[Example], shots: int, seed: int) -> TeacherPrompt:
    """The paper's prompt (shots=0), or the class-conditional list prompt with `shots` seed examples."""
    if shots > 0:
        return task.shots_prompt(w.example, pick_shots(task, w.example, pool, task.max_shots(shots), seed))
    return task.teacher_prompt(w.example, w.prediction)


def augment(
    task: Task,
    teacher: Teacher,
    wrong: Sequence[WrongExample],
    *,
    iteration: int,
    per_wrong: int = 1,
    run_seed: int = 0,
    max_retries: int = 2,
    shots: int = 0,
    pool: Sequence[Example] = (),
    progress: ProgressFn | None = None,
) -> AugmentResult:
    """Ask the teacher for `per_wrong` new examples per wrong seed example; parse and validate them.

    A wrong example whose samples all fail validation is asked again (new sampling seed) up to
    `max_retries` times. All requests of one round go to the teacher in one batch. With `shots` > 0 the
    prompt lists that many examples from `pool` (the seed set) like the wrong one (see Task.shots_prompt).
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
            rseed = request_seed(run_seed, iteration, w.example.id, attempt)
            tp = build_prompt(task, w, pool, shots, rseed)
            sampling = task.teacher_sampling(rseed)
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
                data, reason = task.parse_teacher(comp.text, w.example, tp.prefix, tp.template)
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


@dataclass
class VerifyResult:
    accepted: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False  # the task's kind has no discrete answer to check (math)


def verify_shots(task: Task, pool: Sequence[Example], per_label: int, seed: int) -> list[Example]:
    """Few-shot examples for the verifier: `per_label` seed examples of every label, shuffled."""
    rng = random.Random(seed)
    if task.kind.name != "classification":
        return rng.sample(list(pool), min(len(pool), task.max_shots(per_label * 2)))
    picked: list[Example] = []
    for label in task.labels:
        same = [e for e in pool if task.label_of(e) == label]
        picked += rng.sample(same, min(per_label, len(same)))
    rng.shuffle(picked)
    return picked


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
) -> VerifyResult:
    """Keep a candidate only if the teacher, asked few-shot in the student's format, gives its label.

    The generator and the verifier see different contexts (a list of one label vs. examples of every
    label), so a question written under the wrong label is usually caught: the teacher answers with the
    label the question really asks for.
    """
    result = VerifyResult()
    if not candidates:
        return result
    probe = task.verify_prompt(candidates[0], [])
    if probe is None:
        return VerifyResult(accepted=list(candidates), skipped=True)
    requests, prompts = [], []
    for c in candidates:
        shots = verify_shots(task, [e for e in pool if e.id != c.meta.get("seed_id")], per_label,
                             request_seed(run_seed, iteration, c.id, 0))
        prompt = task.verify_prompt(c, shots) or ""
        prompts.append(prompt)
        if teacher.prefers_completion:
            requests.append(GenerationRequest(sampling=task.verify_sampling(), prompt=prompt))
        else:
            requests.append(GenerationRequest(sampling=task.verify_sampling(), messages=(
                ("system", "Continue the last block with its answer only, as in the blocks before it."),
                ("user", prompt))))
    outputs = teacher.generate(requests, progress=progress)
    for c, comps in zip(candidates, outputs, strict=True):
        text = comps[0].text if comps else ""
        pred = task.kind.prediction_from_text(c.data, task.labels, text)
        if task.kind.is_correct(c.data, pred):
            result.accepted.append(c)
        else:
            result.rejected.append({"seed_id": c.meta.get("seed_id"), "iteration": iteration, "id": c.id,
                                    "reason": f"verify: teacher answered {task.readable(pred)!r}, "
                                              f"not {task.readable(task.kind.gold(c.data))!r}",
                                    "verifier_output": text[:200], "example": c.to_json()})
    return result
