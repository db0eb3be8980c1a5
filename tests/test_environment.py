"""Faults of the machine, not of the input: a full disk, a read-only folder, a folder we may not write.

Each ends in one line and exit 2, naming the path (and, for a full disk, how much was being written), and
leaves a run that the same command resumes. The disks are small tmpfs mounts (root only: skipped, with the
reason, where mounting is not allowed; CI runs as root); the runs use the fake plug-ins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import one_line_error, plugin_env

RUN = ["--task", "demo", "--seed-size", "18", "--iterations", "2", "--seed", "5", "--per-wrong", "1",
       "--verify", "none", "--student", "fake", "--teacher", "fake"]


def _localaug(*args: str, user: str | None = None, **env: str) -> subprocess.CompletedProcess:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run([*prefix, sys.executable, "-m", "localaug.cli", *args], capture_output=True, text=True,
                          env=plugin_env(**env), timeout=300)


def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not root'}); CI runs this as root")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 kB tmpfs: less than a run of the fakes writes (about 300 kB)."""
    where = tmp_path / "disk"
    _mount(where, "size=160k")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _artefacts(root: Path) -> dict[str, bytes]:
    # Timings, own paths, dates.
    skip = {"manifest.json", "report.md", "report.html", "config.yaml", ".lock", "accuracy.png"}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name not in skip}


@pytest.mark.parametrize("cache_on_disk", [True, False], ids=["cache-on-the-full-disk", "cache-elsewhere"])
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path: Path, disk: Path, cache_on_disk: bool) -> None:
    clean = _localaug("run", *RUN, "--out", str(tmp_path / "clean"), "--cache", str(tmp_path / "clean.sqlite"))
    assert clean.returncode == 0, clean.stderr[-2000:]
    out, cache = disk / "run", (disk if cache_on_disk else tmp_path) / "cache.sqlite"
    err = one_line_error(_localaug("run", *RUN, "--out", str(out), "--cache", str(cache)),
                    "no space left on the device", "written when it stopped", str(disk), "rerun the same command")
    assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")], err
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    resumed = _localaug("run", *RUN, "--out", str(out), "--cache", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _artefacts(out) == _artefacts(tmp_path / "clean")


def test_a_library_that_fills_the_disk_is_one_line_too(tmp_path: Path, disk: Path) -> None:
    # safetensors writes the student's adapter itself and raises its own error type on a full disk.
    import torch
    from safetensors.torch import save_file

    from localaug.errors import UserError
    from localaug.files import atomic_dir

    with pytest.raises(UserError) as e:
        with atomic_dir(disk / "adapter") as tmp:
            save_file({"w": torch.zeros(100_000)}, str(tmp / "adapter.safetensors"))  # 400 kB
    assert "adapter: cannot write this (no space left on the device" in str(e.value) and "\n" not in str(e.value)
    assert list(disk.iterdir()) == []  # nothing half-written kept


def test_a_read_only_output_folder_is_refused_before_anything(tmp_path: Path) -> None:
    where = tmp_path / "ro"
    _mount(where, "size=1m,ro")
    try:
        one_line_error(_localaug("run", *RUN, "--out", str(where / "run"), "--cache", str(tmp_path / "c.sqlite")),
                  "the run directory cannot be written", "read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_folder_we_may_not_write_is_refused_before_anything(tmp_path: Path) -> None:
    user = None
    if os.geteuid() == 0:  # root may write anywhere: run the command as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot run a command as another user")
        user = "65534"
    # A folder others may enter (pytest's own are private): a writable cache, and a folder only its owner writes.
    area = Path(tempfile.mkdtemp())
    try:
        area.chmod(0o755)
        cache = area / "cache"
        cache.mkdir()
        cache.chmod(0o777)
        locked = area / "locked"
        locked.mkdir()
        locked.chmod(0o755 if user else 0o555)
        res = _localaug("run", *RUN, "--out", str(locked / "run"), "--cache", str(cache / "c.sqlite"), user=user,
                        LOCALAUG_CACHE_DIR=str(cache), HOME=str(cache))
        one_line_error(res, "the run directory cannot be written", str(locked), "permission denied")
        assert not (locked / "run").exists()
    finally:
        locked.chmod(0o755)
        shutil.rmtree(area)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_threads_follow_the_cores_the_process_may_use() -> None:
    # A process limited to one core (taskset, a container's cpuset, a pytest-xdist worker): llama.cpp and the
    # torchrun workers size their threads to that core, not to the machine's count.
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from localaug.cores import usable_cores; print(usable_cores(), os.cpu_count())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    used, machine = map(int, res.stdout.split())
    assert used == 1 and machine >= 1


@pytest.mark.skipif(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) < 2, reason="not under pytest -n 2")
def test_each_test_worker_has_a_core_of_its_own() -> None:
    # tests/conftest.py: under `pytest -n 2` (pyproject's default on 2 cores) a worker's llama.cpp and torch
    # threads must not share a core with the other worker's (spinning threads run several times slower).
    from localaug.cores import usable_cores

    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    assert 1 <= usable_cores() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1) // count
