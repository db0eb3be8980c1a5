"""Shared test settings: real data from ../shared/data (never copied in), a private cache dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The fakes of tests/fakes.py as an installed plug-in distribution (tests/plugins/README.md): on the path, its
# entry points name them `fake` in the groups localaug.students / localaug.teachers.
PLUGINS = REPO / "tests" / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))
DATA_DIR = Path(os.environ.get("LOCALAUG_DATA_DIR", REPO.parent / "shared" / "data"))
os.environ["LOCALAUG_DATA_DIR"] = str(DATA_DIR)
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data; every test that reads it takes this fixture, so a missing folder fails them all the
    same way, with one clear message."""
    if not (DATA_DIR / "trec" / "train.jsonl").exists():
        pytest.fail(f"benchmark data not found at {DATA_DIR}: set LOCALAUG_DATA_DIR to the folder holding "
                    "trec/, snips/, sst2/, gsm8k/ and casehold/")
    return DATA_DIR


def plugin_env(**extra: str) -> dict[str, str]:
    """os.environ for a `localaug` subprocess that finds the fake plug-ins (and tests.fakes behind them)."""
    env = {k: v for k, v in os.environ.items() if k != "LOCALAUG_FAILPOINT"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, **extra}
