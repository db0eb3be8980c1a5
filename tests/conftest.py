"""Shared test settings: real data from ../shared/data (never copied in), a private cache dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The fakes of tests/fakes.py as an installed plug-in distribution (tests/plugins/README.md): on the path, its
# entry points name them `fake` in the groups localaug.students / localaug.teachers.
PLUGINS = REPO / "tests" / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

def _pin_xdist_worker() -> None:
    """Under `pytest -n N` each worker gets its own share of the allowed cores, before torch is imported: torch,
    llama.cpp and torchrun then size their threads to it (localaug.cores), and no two workers' threads spin
    against each other on one core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if count > 1 and len(cores) >= count:
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) :: count])


_pin_xdist_worker()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): two workers where two cores are allowed, else none (one process). Not
    more: each worker loads its own copy of the models, and the suite's heavy tests are few."""
    from localaug.cores import usable_cores

    return 2 if usable_cores() >= 2 else 0


DATA_DIR = Path(os.environ.get("LOCALAUG_DATA_DIR", REPO.parent / "shared" / "data"))
os.environ["LOCALAUG_DATA_DIR"] = str(DATA_DIR)
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"

# `localaug prepare` on an empty cache runs first (the first worker's first test): on a fresh machine (CI) it then
# makes the two models once for the whole session, in the session's cache (tests/test_prepare.py), instead of
# once in its own folder and again for the first test that needs each model. A worker that needs a model
# meanwhile waits for it (localaug.files.one_maker) instead of making it a second time.
FIRST = "tests/test_prepare.py::test_prepare_makes_both_models_ready_once"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid != FIRST)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data; every test that reads it takes this fixture, so a missing folder fails them all the
    same way, with one clear message."""
    if not (DATA_DIR / "trec" / "train.jsonl").exists():
        pytest.fail(f"benchmark data not found at {DATA_DIR}: set LOCALAUG_DATA_DIR to the folder holding "
                    "trec/, snips/, sst2/, gsm8k/ and casehold/")
    return DATA_DIR


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """What a refused command must look like: exit 2, one line on stderr, no traceback, each needle in it."""
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stdout[-1500:], err[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def plugin_env(**extra: str) -> dict[str, str]:
    """os.environ for a `localaug` subprocess that finds the fake plug-ins (and tests.fakes behind them)."""
    env = {k: v for k, v in os.environ.items() if k != "LOCALAUG_FAILPOINT"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, **extra}


@pytest.fixture(scope="session")
def fake_demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One finished `localaug run` on the demo, the real CLI in a subprocess (a 100-column terminal), with the
    fake models of tests/fakes.py: (its run directory, what it printed). Shared by the report and terminal tests;
    the settings give three iterations, two teacher rounds and every filter of the default recipe (~7 s)."""
    import subprocess

    tmp = tmp_path_factory.mktemp("fake-demo")
    env = plugin_env(COLUMNS="100", TERM="xterm")
    cmd = [sys.executable, "-m", "localaug.cli", "run", "--task", "demo", "--seed-size", "24", "--iterations", "3",
           "--seed", "3", "--student", "fake", "--teacher", "fake",
           "--cache", str(tmp / "cache.sqlite"), "--out", str(tmp / "run")]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "run", res.stdout


@pytest.fixture(scope="session")
def real_demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished `localaug run` on the demo with the real student (Gemma 3 270M, transformers + peft) and the
    fake teacher plug-in: one iteration (plain fine-tuning: the teacher is never asked), 16 seeds at 2 epochs,
    the first 50 test rows. Its iter_00/eval_test.jsonl holds localaug's own predictions, the source of truth
    of the export and llama.cpp evaluation tests (tests/test_export.py). About a minute on 2 quiet cores."""
    from click.testing import CliRunner

    from localaug.cli import main

    tmp = tmp_path_factory.mktemp("real-demo")
    cfg = tmp / "run.yaml"
    cfg.write_text("task: demo\nrecipe: paper\niterations: 1\npreflight: 0\nverify: none\nteacher: fake\n"
                   "seed_size: 16\ntest_size: 50\nstudent_settings: {epochs: 2}\n")
    res = CliRunner().invoke(main, ["run", "--config", str(cfg), "--out", str(tmp / "run"),
                                    "--cache", str(tmp / "cache.sqlite")])
    assert res.exit_code == 0, res.output
    return tmp / "run"


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run written through the store's API (bench/synthetic_run.py): every fate of a teacher example,
    and teacher texts that try to break out of a web page. Its reports are written."""
    from bench.synthetic_run import write_run
    from localaug.report import write_report
    from localaug.store import RunStore

    run = write_run(tmp_path_factory.mktemp("synthetic") / "run", teacher_examples=60)
    write_report(RunStore.open_existing(run))
    return run


@pytest.fixture(scope="session")
def gemma_teacher():  # noqa: ANN201
    """The default card's small model as an in-process llama.cpp teacher, loaded once for the whole session
    (its tests ask for short generations; the model stays ~0.5 GB in memory). One thread: llama.cpp's threads
    spin, and two of them beside any other busy process ran the llama.cpp tests 5-7x slower than one (2 cores)."""
    from localaug.teacher import build_teacher

    teacher = build_teacher("gemma3-270m", batch_sequences=8, n_threads=1)
    yield teacher
    teacher.close()
