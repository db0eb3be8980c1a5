"""Shared test settings: real data from ../shared/data (never copied in), a private cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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
