"""docs/RESULTS.md's tables are regenerated from the committed raw results; a stale table fails here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import study_report  # noqa: E402  (bench/ is a folder of scripts)


def test_every_generated_table_matches_the_raw_results() -> None:
    doc = study_report.DOC.read_text(encoding="utf-8")
    runs = study_report.load()
    names = [m.group(2) for m in study_report.BLOCK.finditer(doc)]
    assert {"confirm-comparisons", "confirm-arms", "confirm-runs", "dev-comparisons", "tune"} <= set(names)
    assert study_report.render(doc, runs) == doc, "run: python bench/study_report.py --write"
    # The check can fail: one changed number in the raw results changes a table.
    changed = [dict(r) for r in runs]
    changed[0] = json.loads(json.dumps(changed[0]))
    changed[0]["final_test_accuracy"] += 0.5
    changed[0]["iterations"][0]["holdout_accuracy"] = (changed[0]["iterations"][0].get("holdout_accuracy") or 0) + 0.5
    assert study_report.render(doc, changed) != doc


def test_statistics_treat_data_seeds_as_the_units() -> None:
    # Two data seeds with two training seeds each: the interval comes from the 2 data-seed means.
    runs = [{"arm": arm, "data_seed": ds, "train_seed": ts, "final_test_accuracy": acc}
            for ds, ts, a, b in [(0, 0, 0.80, 0.70), (0, 1, 0.70, 0.70), (1, 0, 0.75, 0.70), (1, 1, 0.75, 0.70)]
            for arm, acc in (("localaug", a), ("plain", b))]
    d = study_report.paired(runs, "localaug", "plain")
    assert {k: [round(x, 6) for x in v] for k, v in d.items()} == {0: [10.0, 0.0], 1: [5.0, 5.0]}
    c = study_report.clustered(d)
    assert c["clusters"] == 2 and c["pairs"] == 4 and abs(c["mean"] - 5.0) < 1e-9
    assert abs(c["hi"] - c["mean"]) < 1e-9  # both data seeds have mean 5: no spread between the units
    assert study_report.holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]


def test_claims_need_an_interval_before_they_call_a_gain_shown() -> None:
    # GSM8K on one data seed (+2 points), TREC on three with a gain above 0: one says "not tested".
    runs = [{"task": task, "phase": "confirm", "arm": arm, "data_seed": ds, "train_seed": 0, "final_test_accuracy": acc}
            for task, ds, gain in [("gsm8k", 10, 0.02), ("trec", 10, 0.05), ("trec", 11, 0.04), ("trec", 12, 0.06)]
            for arm, acc in (("localaug", 0.5 + gain), ("plain", 0.5))]
    rows = {line.split(" | ")[0]: line for line in study_report.claims_table(runs)}
    assert "+2.0 (1 data seed, no interval)" in rows["| LLM2LLM gain on GSM8K"]
    assert rows["| LLM2LLM gain on GSM8K"].endswith("| not tested (270M student, 1.5B teacher) |")
    assert "(3 data seeds)" in rows["| LLM2LLM gain on TREC"] and "a gain: yes" in rows["| LLM2LLM gain on TREC"]
    assert "not run (see text)" in rows["| LLM2LLM gain on SST-2"]


def test_cost_estimate_adds_up_the_measured_parts() -> None:
    import task_cost  # noqa: PLC0415  (bench/ is a folder of scripts)

    # 10 seeds, 2 steps of 10 s at 1 epoch (6 in a real run: 12 steps), rows of 1 s, candidates of 100 s with
    # half of them kept, a student right on 60% of test rows: 4 seeds wrong, 12 asked, 6 kept.
    m = {"seed_size": 10, "train_steps": 2, "train_seconds": 20.0, "epochs": 1.0, "full_epochs": 6.0,
         "seed_rows": 10, "seed_seconds": 10.0, "seed_accuracy": 1.0, "test_rows": 5, "test_seconds": 5.0,
         "test_accuracy": 0.6, "teacher_candidates": 4, "teacher_seconds": 400.0, "teacher_accepted": 2,
         "per_wrong": 3}
    e = task_cost.estimate(m, confirm_rows=20, preflight=64)
    assert (e["wrong"], e["candidates"]) == (4, 12)
    steps1 = round(12 * 16 / 10)  # 6 kept examples make the second set 16 rows
    assert e["students"] == (12 + 12 + steps1) * 10.0
    assert e["scoring"] == 2 * 20 * 1.0 + 3 * 10 * 1.0
    assert e["teacher"] == (10 / 2 + 12) * 100.0
    assert e["steps_control"] == steps1 * 10.0 + 20 * 1.0 + 10 * 1.0
