"""A training stage on several processes: the driver writes a job file, starts torchrun, relays the workers'
progress and reads their result. `localaug run` itself stays one process (loop, teacher, run directory, lock).

    <stage>/train_workers/job.json                 what to train (items, plan, weights, where the adapter goes)
    <stage>/train_workers/launcher.log             torchrun's own output
    <stage>/train_workers/rank<R>.log              each worker's output (kept: the first place to look)
    <stage>/train_workers/rank<R>.progress.jsonl   one line per optimizer step (removed after success)
    <stage>/train_workers/rank<R>.error            a failed worker's exception, one line
    <stage>/train_workers/result.json              rank 0's TrainStats, read by the driver

The launch line is `python -m torch.distributed.run --standalone --nproc_per_node N -m localaug.student.worker
JOB` (`torch.distributed.run` is what the `torchrun` script runs; the module form pins this interpreter), or the
card's `launcher` followed by `-m localaug.student.worker JOB` (multi-node: README "Scaling out"). Only rank 0
writes the adapter, through the same atomic folder as one process; the loop marks the stage after `train`
returns, i.e. after the job exited 0 — a failed or killed job leaves the stage to be run again.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cores import usable_cores
from ..errors import UserError
from ..failpoints import failpoint
from ..files import atomic_write_text
from ..protocols import ProgressFn, TrainItem, TrainStats
from .plan import StudentPlan

WORKER_MODULE = "localaug.student.worker"
JOB_FOLDER = "train_workers"
POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux PR_SET_PDEATHSIG).

    Called in the launcher between fork and exec (driver -> torchrun, SIGTERM so that torchrun, or srun, stops
    its own workers) and first thing in each worker (torchrun -> worker, SIGKILL): `kill -9` of the driver
    leaves no process behind. Elsewhere than Linux it does nothing."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    _libc().prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if parent == 1 or os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


_LIBC: Any = None


def _libc() -> Any:
    # Loaded once in the parent: between fork and exec (preexec_fn) the child should only call, not dlopen.
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _launcher_died_with_driver() -> None:
    die_with_parent(signal.SIGTERM)


def job_folder(out_dir: Path) -> Path:
    """Where a stage's job lives: next to the adapter (`iter_00/adapter` -> `iter_00/train_workers`)."""
    return Path(out_dir).parent / JOB_FOLDER


def launch_command(plan: StudentPlan, job: Path) -> list[str]:
    if plan.launcher:
        prefix = shlex.split(plan.launcher)
    else:
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                  str(plan.processes)]
    return [*prefix, "-m", WORKER_MODULE, str(job)]


def _worker_env(plan: StudentPlan) -> dict[str, str]:
    env = dict(os.environ)
    # The workers import the same localaug as the driver, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if plan.device == "cpu" and "OMP_NUM_THREADS" not in env:
        # The cores shared out (torchrun would otherwise give every worker a single thread).
        cores = usable_cores()
        env["OMP_NUM_THREADS"] = str(max(1, cores // max(plan.processes, 1)))
    return env


def train_in_workers(model_dir: Path, plan: StudentPlan, items: Sequence[TrainItem], out_dir: Path, seed: int,
                     progress: ProgressFn | None = None) -> TrainStats:
    """Train in torchrun workers; the adapter lands in `out_dir` (rank 0). Raises UserError (one line naming the
    rank and its log) when a worker fails."""
    folder = job_folder(out_dir)
    shutil.rmtree(folder, ignore_errors=True)  # a failed or killed earlier attempt at this stage
    folder.mkdir(parents=True)
    job = folder / "job.json"
    atomic_write_text(job, json.dumps({
        "model_dir": str(Path(model_dir).resolve()), "plan": plan.to_dict(), "seed": seed,
        "out_dir": str(Path(out_dir).resolve()), "items": [[it.prompt, it.completion] for it in items]}))
    watch = _ProgressWatch(folder, progress, f"workers:{Path(out_dir).parent.name}")
    if sys.platform.startswith("linux"):
        _libc()
    t0 = time.perf_counter()
    cmd = launch_command(plan, job)
    with open(folder / "launcher.log", "wb") as log:
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_worker_env(plan),
                                    preexec_fn=_launcher_died_with_driver)
        except OSError as e:  # a launcher line whose program is not there
            raise UserError(f"cannot start the training launcher '{cmd[0]}' ({e.strerror})",
                            field="student.launcher") from None
        (folder / "launcher.pid").write_text(str(proc.pid))
        try:
            while True:
                try:
                    rc = proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    watch.poll()
        finally:
            if proc.poll() is None:  # the driver is stopping (Ctrl-C, an error): stop the workers with it
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    watch.poll()
    result = folder / "result.json"
    if rc != 0 or not result.exists():
        raise _failure(folder, rc)
    stats = TrainStats(**json.loads(result.read_text()))
    stats.extra["launch_seconds"] = round(time.perf_counter() - t0 - stats.seconds, 2)
    for p in [job, result, folder / "launcher.pid", *folder.glob("rank*.progress.jsonl")]:
        p.unlink(missing_ok=True)  # the logs stay: what each worker printed
    return stats


class _ProgressWatch:
    """Reads the workers' progress files as they grow; reports steps (the slowest rank's), the loss (the Trainer
    logs the mean over ranks) and tokens/s summed over ranks."""

    def __init__(self, folder: Path, progress: ProgressFn | None, failpoint_name: str) -> None:
        self.folder, self.progress, self.failpoint_name = folder, progress, failpoint_name
        self.offsets: dict[Path, int] = {}
        self.latest: dict[Path, dict[str, Any]] = {}

    def poll(self) -> None:
        new = False
        for path in sorted(self.folder.glob("rank*.progress.jsonl")):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
            self.offsets[path] = self.offsets.get(path, 0) + end
            for line in data[:end].splitlines():
                row = json.loads(line)
                if "step" in row:
                    self.latest[path] = row
                    new = True
        if not new:
            return
        failpoint(self.failpoint_name)  # the kill-and-resume test: the driver dies while the workers train
        if self.progress is not None:
            rows = list(self.latest.values())
            first = self.latest.get(self.folder / "rank0.progress.jsonl", rows[0])
            info: dict[str, Any] = {"tokens_per_s": round(sum(r.get("tokens_per_s", 0.0) for r in rows), 1),
                                    "processes": len(rows)}
            if first.get("loss") is not None:
                info["loss"] = first["loss"]
            info["worker_time"] = first.get("time")  # when rank 0 ended the step (this relay lags by a poll)
            self.progress(min(r["step"] for r in rows), first["total"], info)


def _failure(folder: Path, rc: int) -> UserError:
    """One line: which rank failed first, why, and where its log is.

    A rank killed by a signal (the OOM killer, a `kill -9`) leaves no word of its own: torchrun's failure summary
    names it, and it comes first, since the other ranks' errors (a collective whose peer is gone) follow from
    it. Otherwise the earliest exception a worker wrote down is the cause."""
    def line(rank: int, why: str) -> UserError:
        return UserError(f"training worker rank {rank} {why}; its log: {folder / f'rank{rank}.log'}")

    failed = _failed_ranks(folder / "launcher.log")
    killed = [(rank, code) for rank, code in failed if code < 0 and code != -signal.SIGTERM]  # SIGTERM: torchrun's
    if killed:
        return line(killed[0][0], f"died (killed by signal {-killed[0][1]})")
    errors = []
    for p in folder.glob("rank*.error"):
        try:
            errors.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if errors:
        first = min(errors, key=lambda x: x["time"])
        return line(first["rank"], f"failed ({first['error']})")
    if failed:
        return line(failed[0][0], f"died (exit code {failed[0][1]})")
    return UserError(f"the training launcher failed (exit code {rc}) before a worker reported; its log: "
                     f"{folder / 'launcher.log'}")


def _failed_ranks(launcher_log: Path) -> list[tuple[int, int]]:
    """(rank, exit code) of each failure in torchrun's summary ("rank : 1 (local_rank: 1)", "exitcode : -9")."""
    try:
        text = launcher_log.read_text(errors="replace")
    except OSError:
        return []
    return [(int(r), int(c)) for r, c in re.findall(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)", text)]
