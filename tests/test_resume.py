"""A run killed with SIGKILL mid-stage resumes to the same bytes, with no teacher call made twice.

The run is the real `localaug run` CLI in a subprocess with the real store, dedup and SQLite cache;
only the models are the small fakes of tests/fakes.py (installed as the plug-ins `fake`: tests/plugins), and the
kill comes from a failpoint ($LOCALAUG_FAILPOINT) at an exact spot rather than a racing timer.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import plugin_env

REPO = Path(__file__).resolve().parent.parent


def _run(tmp: Path, name: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = plugin_env(FAKE_TEACHER_LOG=str(tmp / f"{name}.calls"))
    if failpoint:
        env["LOCALAUG_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "localaug.cli", "run", "--task", "demo", "--seed-size", "18", "--iterations", "3",
           "--seed", "5", "--per-wrong", "1", "--verify", "none",
           "--student", "fake", "--teacher", "fake",
           "--cache", str(tmp / f"{name}.sqlite"), "--out", str(tmp / name)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _calls(tmp: Path, name: str) -> int:
    p = tmp / f"{name}.calls"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    tmp = tmp_path_factory.mktemp("ref")
    res = _run(tmp, "ref")
    assert res.returncode == 0, res.stderr
    assert (tmp / "ref" / "report.md").exists() and (tmp / "ref" / "accuracy.png").exists()
    return tmp / "ref", _calls(tmp, "ref")


@pytest.mark.parametrize("failpoint", ["train:1", "augment:0", "augment:1", "dedup:0", "dedup:1",
                                       "train:iter_01/fold0"])
def test_killed_run_resumes_to_identical_data(tmp_path: Path, reference: tuple[Path, int], failpoint: str) -> None:
    ref_dir, ref_calls = reference
    assert ref_calls > 0
    killed = _run(tmp_path, "k", failpoint)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (tmp_path / "k" / "manifest.json").read_text().count('"finished": true')
    resumed = _run(tmp_path, "k")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for rel in ["seed.jsonl", "test.jsonl", "iter_01/train.jsonl", "iter_02/train.jsonl",
                "iter_00/augment.jsonl", "iter_00/rejected.jsonl", "iter_01/augment.jsonl"]:
        assert (tmp_path / "k" / rel).read_bytes() == (ref_dir / rel).read_bytes(), rel
    # Every generation finished before the kill came from the cache: the total equals one clean run.
    assert _calls(tmp_path, "k") == ref_calls
    # No temp files are left behind by the atomic writes.
    assert not list((tmp_path / "k").rglob(".*.tmp*"))


def test_resume_flag_continues_with_the_saved_config(tmp_path: Path, reference: tuple[Path, int]) -> None:
    killed = _run(tmp_path, "k", "train:2")
    assert killed.returncode == -signal.SIGKILL
    env = plugin_env(FAKE_TEACHER_LOG=str(tmp_path / "k.calls"))
    res = subprocess.run([sys.executable, "-m", "localaug.cli", "run", "--resume", str(tmp_path / "k")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "k" / "iter_02/eval_test.jsonl").read_bytes() == (
        reference[0] / "iter_02/eval_test.jsonl").read_bytes()
    # `localaug report` rebuilds the report from the manifest alone.
    (tmp_path / "k" / "report.md").unlink()
    rep = subprocess.run([sys.executable, "-m", "localaug.cli", "report", str(tmp_path / "k")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    text = (tmp_path / "k" / "report.md").read_text()
    # The default recipe holds no seeds out, so the verdict compares the last student with iteration 0.
    assert rep.returncode == 0 and "Plain fine-tuning (iteration 0)" in text and "| 2 |" in text
