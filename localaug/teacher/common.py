"""Helpers shared by the teacher backends and the cache: sample expansion and collection."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

from ..protocols import Completion, GenerationRequest, ProgressFn, Sampling

# A backend's streaming form: yields (request index, sample index, completion) as samples finish,
# in any order. CachedTeacher uses it to store each completion the moment it exists.
StreamFn = Callable[[Sequence[GenerationRequest]], Iterable[tuple[int, int, Completion]]]


def sample_sampling(req: GenerationRequest, i: int) -> Sampling:
    """The sampling settings of sample i: the request's, with seed + i (the protocol's rule)."""
    return replace(req.sampling, seed=req.sampling.seed + i)


def iter_jobs(requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, int, GenerationRequest, Sampling]]:
    for ri, req in enumerate(requests):
        if req.n < 1:
            continue
        for si in range(req.n):
            yield ri, si, req, sample_sampling(req, si)


def run_stream(
    stream: StreamFn, requests: Sequence[GenerationRequest], progress: ProgressFn | None
) -> list[list[Completion]]:
    """Collect a stream into one list of n completions per request, reporting progress."""
    out: list[list[Completion | None]] = [[None] * max(0, r.n) for r in requests]
    total = sum(len(o) for o in out)
    done, tokens, t0 = 0, 0, time.perf_counter()
    for ri, si, comp in stream(requests):
        out[ri][si] = comp
        done += 1
        tokens += comp.completion_tokens
        if progress is not None:
            dt = max(time.perf_counter() - t0, 1e-9)
            progress(done, total, {"tokens": tokens, "tokens_per_s": tokens / dt})
    missing = [(ri, si) for ri, o in enumerate(out) for si, c in enumerate(o) if c is None]
    if missing:  # a backend bug, not a user error
        raise RuntimeError(f"teacher backend returned no completion for {len(missing)} samples")
    return [[c for c in o if c is not None] for o in out]


def choice_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are `choices` (llama.cpp, llama-server, llama_cpp.server)."""
    def literal(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    return "root ::= " + " | ".join(literal(c) for c in choices)
