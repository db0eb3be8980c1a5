"""What the run directory's files say, counted straight from the JSONL (never through localaug.report), for the
tests that check report.html's numbers against them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    # split on newlines only: a teacher's text may hold U+2028, which str.splitlines would also split on
    return [json.loads(x) for x in path.read_text().split("\n") if x.strip()] if path.exists() else []


def round_counts(run: Path, i: int) -> dict[str, int]:
    """{"written", "kept", "refused:<reason's first word>"...} of round i, from its files."""
    here = run / f"iter_{i:02d}"
    counts: Counter[str] = Counter()
    written = len(_rows(here / "candidates.jsonl")) + len(_rows(here / "rejected_parse.jsonl"))
    counts["written"] = written
    counts["kept"] = len(_rows(here / "augment.jsonl"))
    for r in _rows(here / "rejected.jsonl"):
        counts["refused:" + r["reason"].split(":", 1)[0]] += 1
    return dict(counts)


def teacher_rounds(run: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in run.glob("iter_*") if (p / "candidates.jsonl").exists())
