"""Small, deterministic stand-ins for the Student and Teacher protocols, for testing the loop.

They are real enough to make the loop's behaviour meaningful: the fake student is a nearest-neighbour
classifier over its training data (so added examples change its answers), and the fake teacher rewrites
the seed example it is shown (so dedup sees near-copies and new texts). Both can be slowed down and both
log their work to files named by environment variables, so subprocess tests can count calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from localaug.protocols import (
    Completion,
    EvalItem,
    EvalResult,
    GenerationRequest,
    ProgressFn,
    TeacherBase,
    TrainItem,
    TrainStats,
)

WORDS = ["quickly", "again", "today", "for my sister", "on my laptop", "since tuesday", "twice", "at work",
         "before noon", "after the update", "from abroad", "with my new card"]


def _tokens(s: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", s.lower()))


class FakeStudent:
    identity = "fake-student"

    def __init__(self, **settings: object) -> None:
        self.settings = settings  # a plug-in receives the run's student settings (e.g. epochs)
        self.train_calls = 0
        self.delay = float(os.environ.get("FAKE_STUDENT_DELAY", "0"))

    @property
    def max_length(self) -> int:
        """The context the pre-run checks measure rows against (a real student's is its card's max_length)."""
        return int(self.settings.get("max_length", 256))  # type: ignore[call-overload]

    def count_tokens(self, text: str) -> int:
        return len(text.split())  # a word is a token to this student

    def train(self, items: Sequence[TrainItem], out_dir: Path, seed: int,
              progress: ProgressFn | None = None) -> TrainStats:
        self.train_calls += 1
        for k in range(len(items)):
            if self.delay:
                time.sleep(self.delay / max(1, len(items)))
            if progress:
                progress(k + 1, len(items), {"loss": 1.0 / (k + 1)})
        tmp = Path(str(out_dir) + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "memory.json").write_text(json.dumps([[i.prompt, i.completion] for i in items]))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
        return TrainStats(steps=len(items), train_tokens=sum(len(i.prompt) for i in items))

    def evaluate(self, adapter_dir: Path | None, items: Sequence[EvalItem],
                 progress: ProgressFn | None = None) -> list[EvalResult]:
        memory = json.loads((Path(adapter_dir) / "memory.json").read_text()) if adapter_dir else []
        out = []
        for k, item in enumerate(items):
            # Score each choice by the word overlap of the most similar training prompt with that answer.
            q = _tokens(item.prompt)
            scores = []
            for choice in item.choices or ():
                best = 0.0
                for prompt, completion in memory:
                    # Leave-one-out: an exact training prompt is ignored, so the fake does not simply
                    # memorise its seed set (a real student at few epochs does not either).
                    if completion == choice and prompt != item.prompt:
                        p = _tokens(prompt)
                        best = max(best, len(q & p) / (len(q | p) or 1))
                scores.append(best)
            idx = max(range(len(scores)), key=lambda j: (scores[j], -j)) if scores else None
            out.append(EvalResult(output=item.choices[idx] if idx is not None else "", choice_index=idx,
                                  scores=scores))
            if progress:
                progress(k + 1, len(items), {})
        return out


class ScriptedTeacher(TeacherBase):
    """Answers every sample of a request with `answer(prompt, choices)` (the test decides what a teacher says) and
    keeps the requests it was sent."""

    prefers_completion = True
    identity = "scripted"

    def __init__(self, answer) -> None:  # noqa: ANN001
        self.answer = answer
        self.requests: list[GenerationRequest] = []

    @property
    def prompts(self) -> list[str]:
        return [r.prompt or "" for r in self.requests]

    def generate(self, requests: Sequence[GenerationRequest], progress=None) -> list[list[Completion]]:  # noqa: ANN001
        self.requests += requests
        return [[Completion(text=self.answer(r.prompt or "", r.choices or ())) for _ in range(r.n)] for r in requests]


class FakeTeacher(TeacherBase):
    prefers_completion = True

    def __init__(self, **settings: object) -> None:
        self.settings = settings  # a plug-in receives the run's teacher settings
        self.identity = "fake-teacher-v1"
        self.calls = 0
        self.delay = float(os.environ.get("FAKE_TEACHER_DELAY", "0"))
        self.log = os.environ.get("FAKE_TEACHER_LOG")

    def _one(self, req: GenerationRequest, i: int) -> Completion:
        seed = req.sampling.seed + i
        prompt = req.prompt or req.messages[-1][1]  # type: ignore[index]
        lines = prompt.splitlines()
        if lines[-1].rstrip().endswith(("Topic:", "Answer type:")):
            # A verification prompt in the student's format: answer with the label of the shot that shares
            # the most words with the candidate (a nearest-neighbour guess, right for most demo rows).
            key = lines[-1].split(":", 1)[0] + ":"
            cand = set(lines[-2].lower().split()[1:])
            shots = [(set(lines[k - 1].lower().split()[1:]), lines[k].split(":", 1)[1].strip())
                     for k in range(1, len(lines) - 1) if lines[k].startswith(key)]
            best = max(shots, key=lambda s: (len(s[0] & cand) / (len(s[0] | cand) or 1), s[1]))
            self.calls += 1
            return Completion(text=" " + best[1], completion_tokens=1)
        # The seed example's text is the last non-empty "Request:"/"Question:"-style line of the prompt.
        last = [ln for ln in lines if ln.startswith(("Request:", "Question:")) and ln.split(":", 1)[1].strip()][-1]
        text = last.split(":", 1)[1].strip()
        h = int(hashlib.sha256(f"{text}/{seed}".encode()).hexdigest(), 16)
        if h % 5 == 0:
            new = text  # a copy of the seed: the task layer must reject it
        elif h % 5 == 1:
            new = ""  # nothing useful: a parse failure
        else:
            new = f"{WORDS[h % len(WORDS)]} {text} {WORDS[(h // 7) % len(WORDS)]}"
        if self.delay:
            time.sleep(self.delay)
        self.calls += 1
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{seed}\n")
        return Completion(text=new, completion_tokens=len(new.split()))

    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, Completion]]:
        """Like the llama.cpp backend: each sample is handed over (and cached) as soon as it is done."""
        for ri, req in enumerate(requests):
            for i in range(req.n):
                yield ri, i, self._one(req, i)

    def generate(self, requests: Sequence[GenerationRequest],
                 progress: ProgressFn | None = None) -> list[list[Completion]]:
        out: list[list[Completion]] = [[] for _ in requests]
        total = sum(r.n for r in requests)
        for done, (ri, _, comp) in enumerate(self.generate_stream(requests), start=1):
            out[ri].append(comp)
            if progress:
                progress(done, total, {})
        return out
