"""Helpers shared by the teacher backends and the cache: sample expansion, collection, file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from .protocols import Completion, GenerationRequest, ProgressFn, Sampling

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


# ---------------------------------------------------------------------------- file hashes

_hash_lock = threading.Lock()
_hash_memo: dict[tuple[str, int, int], str] = {}


def default_cache_dir() -> Path:
    env = os.environ.get("LOCALAUG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "localaug"


def file_sha256(path: Path) -> str:
    """sha256 of a (large) model file, remembered by (path, mtime, size) in memory and on disk.

    Hashing a 250 MB GGUF takes about a second; a model card is loaded many times per run.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _hash_lock:
        if key in _hash_memo:
            return _hash_memo[key]
        memo_file = default_cache_dir() / "file_hashes.json"
        disk_key = f"{key[0]}|{key[1]}|{key[2]}"
        try:
            disk: dict[str, str] = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            disk = {}
        digest = disk.get(disk_key)
        if digest is None:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
            disk[disk_key] = digest
            try:  # best effort: a read-only cache dir only costs a re-hash next time
                memo_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(disk, indent=0))
                os.replace(tmp, memo_file)
            except OSError:
                pass
        _hash_memo[key] = digest
        return digest
