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


@pytest.fixture
def data_dir() -> Path:
    if not (DATA_DIR / "trec" / "train.jsonl").exists():
        pytest.fail(f"shared data not found at {DATA_DIR}; set LOCALAUG_DATA_DIR")
    return DATA_DIR
