"""A run killed inside a batched teacher stage resumes to exactly the files of an uninterrupted run.

llama.cpp's batched logits depend on which sequences share a decode call, so a resumed stage that batched
only what was still missing wrote other text than the clean run. The teacher's samples are now cut into
fixed groups by their position in the stage and each group is stored whole (teacher/cache.py): the kill
comes from a failpoint inside the second group of the real 270M GGUF teacher's first generation call.
The student is the fake plug-in: the teacher stage is the point.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import plugin_env

# Timings and dates (the manifest and both reports: report.html shows each stage's seconds); and config.yaml, which
# names each run's own folder and cache file (compared without them).
VOLATILE = {"manifest.json", "report.md", "report.html", "config.yaml"}


def _run(tmp: Path, name: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    cfg = tmp / "run.yaml"
    # Two sequences per decode call: groups of 8 samples, so the 10 targets make two groups. One thread: llama.cpp's
    # spinning threads crawl on a busy machine.
    cfg.write_text("teacher_settings: {batch_sequences: 2, n_ctx: 1024, n_threads: 1}\n")
    env = plugin_env(**({"LOCALAUG_FAILPOINT": failpoint} if failpoint else {}))
    cmd = [sys.executable, "-m", "localaug.cli", "run", "--config", str(cfg), "--task", "demo", "--seed-size", "18",
           "--iterations", "2", "--seed", "5", "--recipe", "paper", "--student", "fake", "--teacher", "gemma3-270m",
           "--cache", str(tmp / f"{name}.sqlite"), "--out", str(tmp / name)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in VOLATILE and p.name != ".lock"}


@pytest.mark.slow
def test_a_kill_inside_a_teacher_batch_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    clean = _run(tmp_path, "clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = _run(tmp_path, "k", "teacher:batch1")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    # The first group (8 samples) was stored whole; nothing of the group the kill came in.
    with sqlite3.connect(tmp_path / "k.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 8
    resumed = _run(tmp_path, "k")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = _files(tmp_path / "clean"), _files(tmp_path / "k")
    assert "iter_00/candidates.jsonl" in want and "iter_01/train.jsonl" in want
    assert sorted(got) == sorted(want)
    assert [f for f in want if got[f] != want[f]] == []
    configs = [yaml.safe_load((tmp_path / name / "config.yaml").read_text()) for name in ("clean", "k")]
    own = {"out": None, "cache_path": None}
    assert configs[0] | own == configs[1] | own
