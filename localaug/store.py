"""The run directory: the user's durable record of a run, and what makes a killed run resumable.

Every file is written to a temp name and renamed. A stage counts as done only when its marker is in
manifest.json, and the marker is written after the stage's artefacts, so a run killed at any moment
resumes at the first stage whose marker is missing and never redoes a finished one.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import Settings, save_config
from .errors import UserError
from .files import atomic_write_text, read_jsonl, write_jsonl_atomic
from .task import Example

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
LOCK = ".lock"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"localaug": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "llama-cpp-python", "datasketch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        self.manifest: dict[str, Any] = {}

    # ------------------------------------------------------------------ open / lock

    @classmethod
    def open_for_run(cls, root: Path, config: Settings) -> RunStore:
        """Create a new run dir, or reopen one that holds the same run (resume). Takes the lock."""
        store = cls(root)
        manifest_path = store.root / MANIFEST
        if store.root.exists() and not store.root.is_dir():
            raise UserError("exists and is not a directory", file=store.root)
        if manifest_path.exists():
            store._lock()
            store.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if store.manifest.get("config_fingerprint") != config.fingerprint():
                store.unlock()
                raise UserError("holds another run (its config differs); pass another --out, or "
                                "--resume to continue it with its own config", file=store.root)
            return store
        if store.root.exists() and any(p.name != LOCK for p in store.root.iterdir()):
            raise UserError("is not empty and holds no localaug run; pass another --out", file=store.root)
        store.root.mkdir(parents=True, exist_ok=True)
        store._lock()
        store.manifest = {
            "localaug_run": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config_fingerprint": config.fingerprint(),
            "versions": _versions(),
            "models": {},
            "stages": {},
            "iterations": {},
        }
        save_config(config, store.root / CONFIG)
        store.save_manifest()
        return store

    @classmethod
    def open_existing(cls, root: Path) -> RunStore:
        store = cls(root)
        path = store.root / MANIFEST
        if not path.exists():
            raise UserError("is not a localaug run directory (no manifest.json)", file=store.root)
        try:
            store.manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"manifest is not valid JSON ({e.msg})", file=path, line=e.lineno) from None
        return store

    def _lock(self) -> None:
        """An flock on .lock: the kernel drops it when the holder dies, so a stale lock of a killed run
        is taken over without any guesswork about pids."""
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"is locked by a running localaug (pid {holder}); wait for it or stop it",
                            file=self.root) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ stages and files

    def save_manifest(self) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True))

    def stage_done(self, name: str) -> bool:
        return bool(self.manifest["stages"].get(name, {}).get("done"))

    def mark_done(self, name: str, **info: Any) -> None:
        self.manifest["stages"][name] = {"done": True, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                         **info}
        self.save_manifest()

    def stage_info(self, name: str) -> dict[str, Any]:
        return dict(self.manifest["stages"].get(name, {}))

    def set_iteration(self, i: int, **info: Any) -> None:
        self.manifest["iterations"].setdefault(f"{i:02d}", {}).update(info)
        self.save_manifest()

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write_jsonl(self, rel: str, rows: list[dict[str, Any]]) -> None:
        write_jsonl_atomic(self.root / rel, rows)

    def read_jsonl(self, rel: str) -> list[dict[str, Any]]:
        return read_jsonl(self.root / rel)

    def write_examples(self, rel: str, examples: list[Example]) -> None:
        self.write_jsonl(rel, [e.to_json() for e in examples])

    def read_examples(self, rel: str) -> list[Example]:
        return [Example.from_json(r) for r in self.read_jsonl(rel)]

    def stage_seconds(self, folder: str) -> float:
        """Seconds spent in the finished stages under `folder` (one iteration's)."""
        return round(sum(v.get("seconds", 0.0) for k, v in self.manifest["stages"].items()
                         if k.startswith(folder + "/")), 1)


def iter_dir(i: int) -> str:
    return f"iter_{i:02d}"
