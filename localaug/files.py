"""Files that are never seen half-written, file hashes, and localaug's cache folder.

Everything localaug writes (run artefacts, adapters, the converted student, dedup indexes, plots) goes
through `atomic_file` or `atomic_dir`: written under a temporary name in the same folder, flushed, then
renamed into place, so a process killed at any moment leaves the old version or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import UserError

CACHE_DIR_ENV = "LOCALAUG_CACHE_DIR"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_ALLOWED = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}


def _size(path: Path) -> int:
    """Bytes under `path` (a file or a folder), 0 if it is gone."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _amount(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def disk_fault(e: BaseException, path: Path, written: int | None = None) -> UserError | None:
    """One line for a write that the machine refused (no space left, read-only, not permitted), naming what was
    being written and how much of it; None for any other error. Libraries that write themselves (safetensors)
    raise their own types, so the message is read too."""
    code = getattr(e, "errno", None)
    full = code in _DISK_FULL or "No space left on device" in str(e) or "disk is full" in str(e)
    if not full and code not in _NOT_ALLOWED:
        return None
    size = "" if written is None else f", {_amount(written)} written when it stopped"
    why = "no space left on the device" if full else _NOT_ALLOWED[code]  # type: ignore[index]
    return UserError(f"cannot write this ({why}{size}); nothing half-written was kept: free space or fix the "
                     "folder, then rerun the same command to resume", file=path)


def cache_dir() -> Path:
    """`$LOCALAUG_CACHE_DIR`, else `~/.cache/localaug`: the teacher cache, converted models, assembled GGUFs."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "localaug"


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file object on a temp name next to `path`; renamed over `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        fault = disk_fault(e, path, _size(tmp))
        if fault is None:
            raise
        raise fault from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_jsonl_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Our own artefacts (written by write_jsonl_atomic); user files go through data.read_rows."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


@contextmanager
def one_maker(final: Path) -> Iterator[None]:
    """Held while this process makes the cache entry `final`: another process that wants the same entry waits
    here, then finds it made, instead of making it a second time beside the first (two runs started at once on
    a fresh machine; parallel test workers). An flock: the kernel drops it when its holder dies, so a killed
    maker never blocks the next. The lock files stay, in the cache's .locks/ (removing one while another
    process waits on it would let a third take a fresh lock beside the first)."""
    locks = cache_dir() / ".locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{Path(final).name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise disk_fault(e, final) or e from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_once(final: Path, is_made: Callable[[], bool], make: Callable[[], None]) -> Path:
    """`final`, made by `make` unless `is_made()`: checked again under `one_maker`, so of two processes that want
    it at once one makes it and the other takes it."""
    if not is_made():
        with one_maker(final):
            if not is_made():  # else another process made it while this one waited
                make()
    return final


@contextmanager
def atomic_dir(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """A temp folder next to `final`, renamed to `final` when the block succeeds.

    replace=True: an existing `final` is moved aside first and dropped after the rename (an adapter
    retrained on resume). replace=False: if another process made `final` meanwhile, theirs is kept."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    except OSError as e:
        raise disk_fault(e, final) or e from None
    try:
        try:
            yield tmp
        except Exception as e:  # noqa: BLE001 - a library's own error type for a full disk (safetensors)
            fault = disk_fault(e, final, _size(tmp))
            if fault is None:
                raise
            raise fault from None
        tmp.chmod(0o755)  # mkdtemp makes it private; ours are as readable as any other folder
        old = None
        if final.exists() and replace:
            old = final.with_name(f".{final.name}-old-{time.time_ns()}")
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            if replace or not final.exists():
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_hash_lock = threading.Lock()
_hash_memo: dict[tuple[str, int, int], str] = {}


def _memo_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def remember_sha256(path: Path, digest: str) -> None:
    """Record the hash of a file localaug just wrote (and hashed while writing), so it is never re-read."""
    key = _memo_key(path)
    with _hash_lock:
        _hash_memo[key] = digest
        _save_memo(f"{key[0]}|{key[1]}|{key[2]}", digest)


def _load_memo() -> dict[str, str]:
    try:
        disk = json.loads((cache_dir() / "file_hashes.json").read_text())
    except (OSError, ValueError):
        return {}
    return disk if isinstance(disk, dict) else {}  # a damaged memo is derived data: start a new one


def _save_memo(disk_key: str, digest: str) -> None:
    disk = _load_memo()
    disk[disk_key] = digest
    try:  # best effort: a read-only cache folder only costs a re-hash next time
        atomic_write_text(cache_dir() / "file_hashes.json", json.dumps(disk, indent=0))
    except OSError:
        pass


def sha256_file(path: Path) -> str:
    """sha256 of a (large) file, remembered by (path, mtime, size) in memory and in the cache folder.

    Hashing a 1 GB GGUF takes seconds; model cards are loaded several times per run."""
    key = _memo_key(path)
    with _hash_lock:
        if key in _hash_memo:
            return _hash_memo[key]
        disk_key = f"{key[0]}|{key[1]}|{key[2]}"
        digest = _load_memo().get(disk_key)
        if digest is None:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
            _save_memo(disk_key, digest)
        _hash_memo[key] = digest
        return digest


def base_sha256(base_dir: Path, base_gguf: Path | None) -> str:
    """The GGUF's sha256; for a Hugging Face folder, the sha256 of its weight files' `sha256  name` lines."""
    if base_gguf is not None:
        return sha256_file(base_gguf)
    lines = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(base_dir.glob("*.safetensors")))
    return hashlib.sha256(lines.encode()).hexdigest()
