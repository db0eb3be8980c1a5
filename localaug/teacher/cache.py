"""A content-addressed SQLite cache of teacher generations, and the Teacher wrapper that uses it.

Key = sha256 over (backend kind, model identity, prompt or messages, sampling settings with the
sample's own seed, choices). Sample i of a request uses seed `sampling.seed + i` (the protocol's
rule), so the effective seed stands for the sample index: sample 2 of a request with seed 0 and
sample 0 of the same request with seed 2 are the same generation, and share one entry.

SQLite in WAL mode with a busy timeout and one short transaction per write, so several threads and
processes can fill the same cache at once. Each completion is written the moment the backend
produces it, or, for a teacher whose outputs depend on their batch, each fixed batch group at once
(`CachedTeacher`): a run killed mid-stage keeps everything it finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import UserError, warn
from ..failpoints import failpoint
from ..files import cache_dir, disk_fault
from ..protocols import Completion, GenerationRequest, ProgressFn, Teacher, TeacherBase
from .common import iter_jobs

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    key               TEXT PRIMARY KEY,
    model             TEXT NOT NULL,     -- backend kind + model identity
    text              TEXT NOT NULL,
    finish_reason     TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds           REAL NOT NULL,     -- generation time when it was produced
    created           REAL NOT NULL      -- unix time
);
CREATE INDEX IF NOT EXISTS generations_model ON generations (model);
"""

# Migrations from version N to N+1, applied in order inside one transaction.
_MIGRATIONS: dict[int, str] = {}


def _split(script: str) -> list[str]:
    lines = [ln.split("--")[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _one_line(e: BaseException) -> str:
    # SQLite's integrity check reports page-level damage over several lines; a warning is one line.
    return " ".join(f"{type(e).__name__}: {e}".split())


def default_cache_path() -> Path:
    """`$LOCALAUG_CACHE_DIR/teacher.sqlite`, else `~/.cache/localaug/teacher.sqlite`."""
    return cache_dir() / "teacher.sqlite"


def model_key(teacher: Any) -> str:
    kind = str(getattr(teacher, "kind", "") or "")
    ident = str(teacher.identity)
    return ident if not kind or ident.startswith(kind + ":") else f"{kind}:{ident}"


def generation_key(model: str, req: GenerationRequest, sample_index: int) -> str:
    sampling = replace(req.sampling, seed=req.sampling.seed + sample_index)
    payload = {
        "v": 2,
        "model": model,
        "prompt": req.prompt,
        "messages": [list(m) for m in req.messages] if req.messages is not None else None,
        "sampling": sampling.key(),
        "choices": list(req.choices) if req.choices is not None else None,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class ModelStats:
    model: str
    entries: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class CacheStats:
    path: Path
    entries: int
    size_bytes: int
    models: list[ModelStats]


class _Unusable(Exception):
    """A cache file that opens but cannot be used (failed integrity check, newer schema)."""


class GenerationCache:
    """The SQLite file. One connection per (process, thread); safe to share the object across threads."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = 60.0,
                 read_only: bool = False) -> None:
        """`read_only`: look, never write (`cache stats`): a damaged file is reported (UserError), left as it is."""
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.busy_timeout_s = busy_timeout_s
        self.read_only = read_only
        self._local = threading.local()
        self.set_aside: Path | None = None  # where a damaged cache file was moved, if one was
        if read_only:
            try:
                self._check(self._conn())
            except (sqlite3.DatabaseError, _Unusable) as e:
                self.close()
                raise UserError(f"the teacher cache is not usable ({_one_line(e)}); left as it is: the next "
                                "command that writes the cache (run, generate, cache clear) moves it aside and "
                                "starts a new one", file=self.path) from None
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._init_schema()
        except (sqlite3.DatabaseError, _Unusable, OSError) as e:
            fault = disk_fault(e, self.path)
            if fault is not None:  # a full disk or a read-only folder is not a damaged cache: keep the file
                self.close()
                raise fault from None
            if isinstance(e, OSError):
                raise
            # The cache is derived data: a damaged one must never stop a run. Keep it for inspection.
            self._set_aside(_one_line(e))
            self._init_schema()

    def _set_aside(self, why: str) -> None:
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.path}{suffix}").rename(f"{moved}{suffix}")
            except FileNotFoundError:  # no such side file, or another process moved it first
                pass
        self.set_aside = moved
        warn(f"the teacher cache {self.path} is not usable ({why}); moved it to {moved} and started a new one")

    def _conn(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None or getattr(self._local, "pid", None) != os.getpid():  # never reuse across fork
            if self.read_only:
                # mode=ro: SQLite itself refuses to change the file. With no write-ahead log beside it (no writer
                # at work), immutable=1 also keeps SQLite from creating the -wal and -shm side files.
                live = Path(f"{self.path}-wal").exists()
                uri = f"file:{quote(str(self.path.absolute()))}?mode=ro" + ("" if live else "&immutable=1")
                c = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s, isolation_level=None)
            else:
                c = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            c.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            c.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process kills
            self._local.conn, self._local.pid = c, os.getpid()
        return c

    @staticmethod
    def _check(c: sqlite3.Connection) -> None:
        """Raise on a file that is no database, fails its integrity check, or was written by a newer localaug."""
        ok = c.execute("PRAGMA quick_check(1)").fetchone()  # bytes that are no database fail right here
        if ok is None or ok[0] != "ok":
            raise _Unusable(f"integrity check says {ok[0] if ok else 'nothing'}")
        has_version = c.execute("SELECT name FROM sqlite_master WHERE name = 'schema_version'").fetchone()
        row = c.execute("SELECT version FROM schema_version").fetchone() if has_version else None
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise _Unusable(f"written by a newer localaug (cache schema {row[0]}, this one reads {SCHEMA_VERSION})")

    def _init_schema(self) -> None:
        c = self._conn()
        self._check(c)
        for attempt in range(50):  # switching to WAL needs a moment without other writers
            try:
                c.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                time.sleep(0.05 * (attempt + 1))
        c.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _split(_SCHEMA):  # not executescript: it would COMMIT our transaction
                c.execute(stmt)
            row = c.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                version = int(row[0])
                while version < SCHEMA_VERSION:
                    for stmt in _split(_MIGRATIONS[version]):
                        c.execute(stmt)
                    version += 1
                c.execute("UPDATE schema_version SET version = ?", (version,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ reads and writes

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        c = self._conn()
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 500):  # stay under SQLite's bound-parameter limit
            chunk = uniq[i : i + 500]
            rows = c.execute(
                "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, seconds FROM generations "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk,
            ).fetchall()
            for k, text, fr, pt, ct, sec in rows:
                out[k] = Completion(text=text, finish_reason=fr, prompt_tokens=pt, completion_tokens=ct,
                                    seconds=sec, cached=True)
        return out

    def get(self, key: str) -> Completion | None:
        return self.get_many([key]).get(key)

    def put(self, key: str, model: str, comp: Completion) -> None:
        if comp.finish_reason == "error":  # never make a failure permanent
            return
        self.put_many([(key, model, comp)])

    def put_many(self, entries: Sequence[tuple[str, str, Completion]]) -> None:
        """Store (key, model, completion) entries in one transaction: all of them, or none if killed."""
        rows = [(k, m, c.text, c.finish_reason, int(c.prompt_tokens), int(c.completion_tokens), float(c.seconds),
                 time.time()) for k, m, c in entries if c.finish_reason != "error"]
        if not rows:
            return
        c = self._conn()
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:  # a full disk: one line, the entries stored so far kept
            raise disk_fault(e, self.path, sum(len(r[2].encode()) for r in rows)) or e from None

    def stats(self) -> CacheStats:
        c = self._conn()
        rows = c.execute(
            "SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(seconds) "
            "FROM generations GROUP BY model ORDER BY COUNT(*) DESC"
        ).fetchall()
        models = [ModelStats(m, int(n), int(pt or 0), int(ct or 0), float(s or 0)) for m, n, pt, ct, s in rows]
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return CacheStats(self.path, sum(m.entries for m in models), size, models)

    def clear(self, model: str | None = None) -> int:
        """Delete all entries (or one model's); return how many were deleted."""
        c = self._conn()
        if model is None:
            n = c.execute("DELETE FROM generations").rowcount
        else:
            n = c.execute("DELETE FROM generations WHERE model = ?", (model,)).rowcount
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if model is None:
            c.execute("VACUUM")
        return int(n)

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


class CachedTeacher(TeacherBase):
    """A Teacher that answers from the cache and sends only the misses to the wrapped teacher.

    A teacher whose output depends on which requests share a batch (llama.cpp's batched logits do) says so
    with `batch_group`, a number of samples. Its requests are then cut into groups of that many by their
    position in the call (the stage's requests in order), never by what is still missing; each group's misses
    are generated together and committed to the cache together. A run killed inside a group loses that group
    whole, and its resume generates exactly the group the uninterrupted run did: the same bytes."""

    def __init__(self, teacher: Teacher, cache: GenerationCache | None = None) -> None:
        self.teacher = teacher
        self.cache = cache if cache is not None else GenerationCache()
        self.identity = teacher.identity
        self.prefers_completion = teacher.prefers_completion
        self.model = model_key(teacher)
        self.model_calls = 0
        self.cache_hits = 0

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[list[Completion]]:
        out: list[list[Completion | None]] = [[None] * max(0, r.n) for r in requests]
        total = sum(len(o) for o in out)
        keys = {(ri, si): generation_key(self.model, req, si) for ri, si, req, _ in iter_jobs(requests)}
        hits = self.cache.get_many(list(keys.values()))
        # One single-sample request per distinct key (identical requests are generated once), in order of first use.
        slots: dict[str, list[tuple[int, int]]] = {}
        single: dict[str, GenerationRequest] = {}
        for ri, si, req, sampling in iter_jobs(requests):
            k = keys[(ri, si)]
            if k in hits:
                out[ri][si] = replace(hits[k])
                self.cache_hits += 1
                continue
            if k not in slots:
                slots[k], single[k] = [], replace(req, n=1, sampling=sampling)
            slots[k].append((ri, si))
        done = total - sum(len(v) for v in slots.values())
        tokens, t0 = 0, time.perf_counter()
        if progress is not None:
            progress(done, total, {"cache_hits": done, "tokens": 0, "tokens_per_s": 0.0})

        def deliver(k: str, comp: Completion) -> None:
            nonlocal done, tokens
            self.model_calls += 1
            for ri, si in slots[k]:
                out[ri][si] = comp
                done += 1
            tokens += comp.completion_tokens
            if progress is not None:
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                progress(done, total, {"cache_hits": self.cache_hits, "tokens": tokens, "tokens_per_s": rate})

        group = int(getattr(self.teacher, "batch_group", 0) or 0)
        if group <= 1:  # outputs independent of their batch: each is stored the moment it exists
            misses = list(slots)
            for j, _, comp in self.teacher.generate_stream([single[k] for k in misses]):
                self.cache.put(misses[j], self.model, comp)
                deliver(misses[j], comp)
        else:
            order = list(dict.fromkeys(keys.values()))  # every distinct key, cached or not: its position
            for g, lo in enumerate(range(0, len(order), group)):
                misses = [k for k in order[lo : lo + group] if k in slots]
                made: list[tuple[str, str, Completion]] = []
                for j, _, comp in self.teacher.generate_stream([single[k] for k in misses]) if misses else ():
                    made.append((misses[j], self.model, comp))
                    deliver(misses[j], comp)
                    failpoint(f"teacher:batch{g}")  # tests: a kill inside a group, before it is stored
                self.cache.put_many(made)
        return [[c for c in o if c is not None] for o in out]

    def close(self) -> None:
        """Free the wrapped model now: left to the garbage collector at interpreter exit, llama.cpp's own
        finaliser runs after its library is unloaded and prints a traceback."""
        self.teacher.close()
        self.cache.close()
