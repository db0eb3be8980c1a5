"""The run directory: the user's durable record of a run, and what makes a killed run resumable.

Every file is written to a temp name and renamed. A stage counts as done only when its marker is in
manifest.json, and the marker is written after the stage's artefacts, so a run killed at any moment
resumes at the first stage whose marker is missing and never redoes a finished one.

The store is the only writer of manifest.json: the loop, the recipe and the CLI hand it typed records
(records.py) through the `record_*` methods and read `store.manifest`, never change it.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from . import __version__, layout
from .config import Settings, save_config
from .errors import UserError
from .files import atomic_write_text, read_jsonl, write_jsonl_atomic
from .layout import CONFIG, LOCK, MANIFEST, Folder
from .records import FinalModel, IterationRow, Manifest, Preflight, StageSummary, TeacherServer
from .task import Example


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
        self._manifest: Manifest | None = None

    @property
    def manifest(self) -> Manifest:
        """A copy of the run's record as it stands: the store alone changes it (`mark_done`, `record_*`)."""
        return self._m.model_copy(deep=True)

    @property
    def _m(self) -> Manifest:
        if self._manifest is None:
            raise RuntimeError("the run directory is not open")
        return self._manifest

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
            try:
                store._manifest = _read_manifest(manifest_path)
            except UserError:
                store.unlock()
                raise
            if store._m.config_fingerprint != config.fingerprint():
                store.unlock()
                raise UserError("holds another run (its config differs); pass another --out, or "
                                "--resume to continue it with its own config", file=store.root)
            return store
        if store.root.exists() and any(p.name != LOCK for p in store.root.iterdir()):
            raise UserError("is not empty and holds no localaug run; pass another --out", file=store.root)
        store.root.mkdir(parents=True, exist_ok=True)
        store._lock()
        store._manifest = Manifest(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                   config_fingerprint=config.fingerprint(), versions=_versions())
        save_config(config, store.root / CONFIG)
        store._save()
        return store

    @classmethod
    def open_existing(cls, root: Path) -> RunStore:
        """A run directory to read (a report, a listing): no lock, nothing written."""
        store = cls(root)
        path = store.root / MANIFEST
        if not path.exists():
            raise UserError("is not a localaug run directory (no manifest.json)", file=store.root)
        store._manifest = _read_manifest(path)
        return store

    def is_running(self) -> bool:
        """Whether a live localaug holds this run's lock (a killed run's lock is free: the kernel dropped it)."""
        path = self.root / LOCK
        if self._lock_fd is not None:
            return True
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe on its own open file: it never blocks
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock at once
        return False

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

    # ------------------------------------------------------------------ the manifest: the only writer

    def _save(self) -> None:
        atomic_write_text(self.root / MANIFEST, json.dumps(self._m.to_json(), indent=2, sort_keys=True))

    def stage_done(self, key: str) -> bool:
        return key in self._m.stages

    def summary(self, key: str) -> StageSummary:
        """The summary a finished stage recorded (KeyError: not finished)."""
        return self._m.stages[key].model_copy()

    def mark_started(self, key: str) -> None:
        """A stage begins: a run that dies before `mark_done` stopped here (`localaug runs` says so)."""
        self._manifest = self._m.model_copy(update={"in_progress": key})
        self._save()

    def mark_done(self, key: str, summary: StageSummary) -> None:
        """Mark a stage done, after its artefacts are written: the resume point moves past it."""
        self._m.stages[key] = summary.model_copy(update={"finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self._manifest = self._m.model_copy(update={"in_progress": None})
        self._save()

    def record_iteration(self, row: IterationRow) -> IterationRow:
        """A finished round, with the seconds its stages took."""
        folder = layout.round_folder(row.iteration).path + "/"
        seconds = sum(v.seconds for k, v in self._m.stages.items() if k.startswith(folder))
        row = row.model_copy(update={"seconds": round(seconds, 1)})
        self._m.iterations[f"{row.iteration:02d}"] = row
        self._save()
        return row

    def record_models(self, *, student: str | None = None, teacher: str | None = None,
                      teacher_cache: str | None = None) -> None:
        """The identities of the models the run used (and where the teacher's cache is)."""
        models = {**self._m.models, **{k: v for k, v in (("student", student), ("teacher", teacher)) if v}}
        update: dict[str, Any] = {"models": models}
        if teacher_cache is not None:
            update["teacher_cache"] = teacher_cache
        self._manifest = self._m.model_copy(update=update)
        self._save()

    def record_preflight(self, preflight: Preflight) -> None:
        self._manifest = self._m.model_copy(update={"preflight": preflight})
        self._save()

    def record_teacher_servers(self, servers: list[TeacherServer]) -> None:
        """The teacher's servers and what each answered (teacher/record.py)."""
        self._manifest = self._m.model_copy(update={"teacher_servers": servers})
        self._save()

    def finish(self, final: FinalModel | None, stopped_early: str | None) -> None:
        self._manifest = self._m.model_copy(update={"final": final, "finished": True, "stopped_early": stopped_early})
        self._save()

    # ------------------------------------------------------------------ files

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

    def rejections(self, folder: Folder) -> list[dict[str, Any]]:
        """Every filter's rejections in a round (rejected_<step>.jsonl), in the order the filters run."""
        order = {step: k for k, step in enumerate(layout.FILTER_ORDER)}

        def rank(f: Path) -> tuple[int, str]:
            return order.get(f.stem.removeprefix(layout.REJECTED_PREFIX), len(order)), f.name

        files = sorted(self.path(folder.path).glob(f"{layout.REJECTED_PREFIX}*.jsonl"), key=rank)
        return [r for f in files for r in read_jsonl(f)]


def _read_manifest(path: Path) -> Manifest:
    from pydantic import ValidationError

    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise UserError(f"manifest is not valid JSON ({e.msg})", file=path, line=e.lineno) from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"not a manifest this localaug can read ({err['msg']})", file=path, field=where) from None
