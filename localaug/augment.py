"""Augmentation: turn each targeted seed example into new, validated training examples via the teacher.

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
from .style import TextStyle
from .task import Example, Task
from .task.prompts import TeacherPrompt, prompts_of


@dataclass
class Target:
    """A seed example the teacher is asked about, and what the student answered for it."""

    example: Example
    prediction: str | None


@dataclass
class Candidates:
    """What the teacher wrote: parsed rows (with lineage) and the texts that did not parse."""

    accepted: list[Example] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"seed_id", "reason", "text", ...}
    completions: int = 0
    completion_tokens: int = 0
    cached: int = 0
    repeats: int = 0  # parsed samples that repeated an earlier sample for the same seed example
    seconds: float = 0.0  # generation time of the completions (cached ones: when they were made)

    @property
    def parse_failure_rate(self) -> float:
        """Completions that did not parse (repeats of an earlier sample parsed, and do not count here)."""
        return (len(self.rejected) - self.repeats) / self.completions if self.completions else 0.0

    @property
    def repeat_rate(self) -> float:
        """Of the parsed samples, the share that repeated an earlier sample for the same seed example."""
        parsed = len(self.accepted) + self.repeats
        return self.repeats / parsed if parsed else 0.0


def request_seed(run_seed: int, iteration: int, example_id: str, attempt: int) -> int:
    h = hashlib.sha256(f"{run_seed}/{iteration}/{example_id}/{attempt}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def request(teacher: Teacher, prompt: str, messages: tuple[tuple[str, str], ...], **kw: Any) -> GenerationRequest:
    """A completion prompt for base models, chat turns for instruction models."""
    if teacher.prefers_completion:
        return GenerationRequest(prompt=prompt, **kw)
    return GenerationRequest(messages=messages, **kw)


def augment(
    task: Task,
    teacher: Teacher,
    targets: Sequence[Target],
    *,
    iteration: int,
    per_wrong: int = 1,
    run_seed: int = 0,
    max_retries: int = 2,
    shots: int = 0,
    pool: Sequence[Example] = (),
    progress: ProgressFn | None = None,
    style: TextStyle | None = None,
) -> Candidates:
    """Ask the teacher for `per_wrong` new examples per target; parse and validate them.

    A target whose samples all fail validation is asked again (new sampling seed) up to `max_retries`
    times. All requests of one round go to the teacher in one batch. With `shots` > 0 the prompt lists
    that many examples from `pool` (the seed set) like the target (see Prompts.listing). With `style`, a
    classification text is rewritten in the seeds' style (localaug.style); the teacher's own is kept in meta.
    """
    result = Candidates()
    prompts = prompts_of(task)
    pending = list(targets)
    chat = not teacher.prefers_completion
    total = len(pending) * per_wrong
    done = 0
    for attempt in range(max_retries + 1):
        if not pending:
            break
        built: list[list[TeacherPrompt]] = []
        requests: list[GenerationRequest] = []
        for t in pending:
            rseed = request_seed(run_seed, iteration, t.example.id, attempt)
            if shots > 0:
                # One prompt per sample, each listing its own draw of seed examples: samples of one
                # unchanged prompt repeat each other far more often (the same question twice in three).
                tps = [prompts.for_target(t.example, t.prediction, pool, shots, rseed + k) for k in range(per_wrong)]
                reqs = [request(teacher, tp.prompt, tp.messages, sampling=prompts.sampling(rseed + k, chat))
                        for k, tp in enumerate(tps)]
            else:  # the paper's prompt: one prompt, n samples
                tps = [prompts.for_target(t.example, t.prediction, pool, 0, rseed)] * per_wrong
                reqs = [request(teacher, tps[0].prompt, tps[0].messages, sampling=prompts.sampling(rseed, chat),
                                n=per_wrong)]
            built.append(tps)
            requests += reqs

        def round_progress(d: int, n: int, info: dict[str, Any], _base: int = done) -> None:
            if progress:
                progress(min(_base + d, total), total,
                         dict(info, accepted=len(result.accepted), rejected=len(result.rejected)))

        outputs = [c for comps in teacher.generate(requests, progress=round_progress) for c in comps]
        still_pending = []
        for j, (t, tps) in enumerate(zip(pending, built, strict=True)):
            seen: set[str] = set()
            got_one = False
            for k, (tp, comp) in enumerate(zip(tps, outputs[j * per_wrong:(j + 1) * per_wrong], strict=True)):
                result.completions += 1
                result.completion_tokens += comp.completion_tokens
                result.cached += int(comp.cached)
                result.seconds += comp.seconds
                # The completion continues `prefix` (e.g. "New question: "); chat replies restate it.
                data, reason = prompts.parse(comp.text, t.example, tp.prefix, tp.template)
                as_written = None
                if data is not None and style is not None and isinstance(data.get("text"), str):
                    as_written = data["text"]
                    data = {**data, "text": style.apply(as_written)}
                key = " ".join(task.kind.dedup_text(data).lower().split()) if data is not None else ""
                if data is not None and key in seen:
                    data, reason = None, "repeat: the same text as an earlier sample for this seed example"
                    result.repeats += 1
                if data is None:
                    result.rejected.append({"seed_id": t.example.id, "iteration": iteration,
                                            "attempt": attempt, "sample": k, "reason": reason,
                                            "text": comp.text[:2000], "finish_reason": comp.finish_reason})
                    continue
                seen.add(key)
                got_one = True
                new_id = f"aug{iteration:02d}-{t.example.id}-a{attempt}s{k}"
                result.accepted.append(Example(new_id, data, {
                    "origin": "teacher", "seed_id": t.example.id, "iteration": iteration,
                    "attempt": attempt, "sample": k, "prompt_hash": tp.prompt_hash,
                    "teacher": teacher.identity,
                    **({"as_written": as_written} if as_written not in (None, data.get("text")) else {}),
                }))
            if not got_one:
                still_pending.append(t)
        done = min(total, done + len(pending) * per_wrong)
        pending = still_pending
    if progress:
        progress(total, total, {"accepted": len(result.accepted), "rejected": len(result.rejected)})
    return result
