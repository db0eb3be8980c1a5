"""docs/RESULTS.md's tables and figure are regenerated from the committed raw results; a stale one fails here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import study_report  # noqa: E402  (bench/ is a folder of scripts)
import study_stats  # noqa: E402
import study_v3  # noqa: E402


def test_every_generated_table_matches_the_raw_results() -> None:
    doc = study_report.DOC.read_text(encoding="utf-8")
    runs = study_report.load()
    names = [m.group(2) for m in study_report.BLOCK.finditer(doc)]
    assert {"v3-primary", "v3-secondary", "v3-rounds-confirm", "v3-rounds-dev", "v3-figure", "confirm-comparisons",
            "confirm-arms", "confirm-runs", "dev-comparisons", "tune"} <= set(names)
    assert study_report.render(doc, runs) == doc, "run: python bench/study_report.py --write"
    # The check can fail: one changed number in the raw results changes a table.
    changed = [dict(r) for r in runs]
    changed[0] = json.loads(json.dumps(changed[0]))
    changed[0]["final_test_accuracy"] += 0.5
    changed[0]["iterations"][0]["holdout_accuracy"] = (changed[0]["iterations"][0].get("holdout_accuracy") or 0) + 0.5
    assert study_report.render(doc, changed) != doc


def test_the_figure_was_drawn_from_the_raw_results() -> None:
    runs = study_v3.reportable(study_report.load())
    if not study_v3.figure_data(runs):
        pytest.skip("the v3 confirmation is not complete yet: no figure")
    assert study_v3.figure_in_png() == study_v3.figure_json(runs), "run: python bench/study_report.py --write"


def _v3_runs(diffs: dict[str, list[tuple[float, float, float, float]]]) -> list[dict]:
    """v3 confirmation lines: per task, per data seed (plain, student 1, student 3, steps) accuracies."""
    runs = []
    for task, rows in diffs.items():
        for ds, (plain, one, three, steps) in enumerate(rows, start=20):
            its = [{"test_accuracy": a, "train_size": 50 + 10 * k} for k, a in enumerate((plain, one, three, three))]
            base = {"study": "v3", "phase": "confirm", "task": task, "data_seed": ds, "train_seed": 0,
                    "settings": {"iterations": 4}}
            runs += [{**base, "arm": "localaug", "iterations": its, "final_test_accuracy": three},
                     {**base, "arm": "plain", "iterations": its[:1], "final_test_accuracy": plain},
                     {**base, "arm": "steps", "iterations": its[:1], "final_test_accuracy": steps}]
    return runs


def test_the_primary_averages_trec_and_snips_within_each_data_seed(tmp_path: Path) -> None:
    runs = _v3_runs({"trec": [(0.80, 0.82, 0.84, 0.80), (0.70, 0.71, 0.72, 0.71), (0.90, 0.90, 0.89, 0.90)],
                     "snips": [(0.90, 0.91, 0.92, 0.90), (0.80, 0.80, 0.80, 0.81), (0.85, 0.86, 0.86, 0.85)]})
    p = study_v3.primary(runs)
    # Data seed 20: (+4 + +2) / 2 = +3; 21: (+2 + 0) / 2 = +1; 22: (-1 + +1) / 2 = 0.
    assert p["clusters"] == 3 and [round(v, 6) for v in p["seed_means"].values()] == [3.0, 1.0, 0.0]
    assert abs(p["mean"] - 4 / 3) < 1e-9 and p["p_signflip"] == 0.5  # 4 of the 8 sign flips reach |+4|
    block = "\n".join(study_v3.primary_block(runs, planned=(20, 21, 22)))
    assert "| 3 |" in block and "0.500" in block and "no difference is shown" in block
    # A data seed with one task only is left out of the primary (the average needs both).
    assert study_v3.primary(runs + _v3_runs({"trec": [(0.5, 0.5, 0.9, 0.5)] * 4})[-3:])["clusters"] == 3
    # Secondary: three tests per task, Holm across all six; "3 rounds - 1 round" reads one run twice.
    sec = study_v3.secondary(runs)
    assert [(r["task"], r["comparison"]) for r in sec] == [
        (t, c) for t in ("trec", "snips") for c in ("localaug - plain", "3 rounds - 1 round", "localaug - steps")]
    rounds = next(r for r in sec if r["task"] == "trec" and r["comparison"] == "3 rounds - 1 round")
    assert [round(v, 6) for v in rounds["seed_means"].values()] == [2.0, 1.0, -1.0]
    assert [r["p_holm"] for r in sec] == study_stats.holm([r["p"] for r in sec])
    assert all(r["adj_lo"] <= r["lo"] and r["adj_hi"] >= r["hi"] for r in sec)  # adjusted intervals are wider
    # The figure carries its numbers; another set of raw lines gives another figure.
    png = tmp_path / "fig.png"
    study_v3.write_figure(runs, png)
    assert study_v3.figure_in_png(png) == study_v3.figure_json(runs) != study_v3.figure_json(runs[:-1])


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


def test_the_sign_flip_p_is_exact() -> None:
    assert study_stats.sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8  # only all-plus and all-minus reach |6|
    assert study_stats.sign_flip_p([3.0, 1.0]) == 0.5
    assert study_stats.sign_flip_p([1.0, -1.0]) == 1.0
    assert study_stats.sign_flip_p([0.1 * k for k in range(1, 9)]) == 2 / 256  # the smallest p of 8 seeds
    # A run that stopped early ended with its last student: that is its student 3 as well.
    early = {"iterations": [{"test_accuracy": 0.5}, {"test_accuracy": 0.6}]}
    assert study_stats.iteration_accuracy(3)(early) == 0.6 and study_stats.iteration_accuracy(0)(early) == 0.5


def test_claims_need_an_interval_and_the_correction_before_they_call_a_gain_shown() -> None:
    # v3: TREC on three data seeds, up every time; SNIPS on one data seed (a difference, no interval).
    runs = _v3_runs({"trec": [(0.80, 0.82, 0.86, 0.80), (0.70, 0.71, 0.76, 0.71), (0.60, 0.62, 0.66, 0.61)],
                     "snips": [(0.80, 0.81, 0.82, 0.80)]})
    rows = {line.split(" | ")[0]: line for line in study_report.claims_table(runs)}
    assert "+2.0 (1 data seed, no interval)" in rows["| LLM2LLM gain on SNIPS"]
    assert rows["| LLM2LLM gain on SNIPS"].endswith("| not tested |")
    trec = rows["| LLM2LLM gain on TREC"]
    assert "up to +52.6" in trec and "(3 data seeds)" in trec
    # +6 on each of 3 data seeds: no spread, so p = 0 and a gain is shown whatever the correction.
    assert "a gain: yes; its size: no" in trec
    assert "not run" in rows["| LLM2LLM gain on SST-2"] and rows["| LLM2LLM gain on SST-2"].endswith("not tested |")
    assert "three rounds - one round" in rows["| Iterative augmentation"]


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


def test_no_v3_table_shows_a_confirmation_that_is_still_running() -> None:
    # Data seeds 20 and 21 complete on both tasks, 22 on TREC only: 2 of the 6 planned.
    runs = _v3_runs({"trec": [(0.80, 0.82, 0.84, 0.80)] * 3, "snips": [(0.90, 0.91, 0.92, 0.90)] * 2})
    assert study_v3.complete_data_seeds(runs) == [20, 21] and not study_v3.is_complete(runs)
    block = "\n".join(study_v3.primary_block(runs))
    assert "2 of 6 planned data seeds (20-25) complete (20, 21)" in block and "not yet reported" in block
    assert "sign-flip" not in block and "+3.0" not in block  # no number of the partial confirmation
    assert study_v3.reportable(runs) == []  # every analysis sees no confirmation line yet
    assert study_report.render("<!-- generated:v3-secondary -->\n<!-- /generated -->", runs).count("|") == 0
    # Once the plan is complete, the same lines are reported.
    assert study_v3.reportable(runs, planned=(20, 21)) == runs
    assert "| 2 |" in "\n".join(study_v3.primary_block(runs, planned=(20, 21)))


def test_every_v3_confirmation_line_ran_the_protocol_commit_after_it_was_committed() -> None:
    confirm = [r for r in study_report.load() if r.get("study") == "v3" and r["phase"] == "confirm"]
    assert confirm, "no v3 confirmation line"
    # The code that ran: the protocol commit itself, clean (a changed tree would record "+dirty").
    assert all(re.fullmatch(study_v3.PROTOCOL_COMMIT + "[0-9a-f]*", r["commit"]) for r in confirm)
    committed = datetime.fromisoformat(study_v3.PROTOCOL_COMMITTED_AT)
    # study.py writes the start in the machine's local time; the machine that ran v3 kept UTC.
    started = [datetime.fromisoformat(r["started"] + "+00:00") for r in confirm]
    assert min(started) > committed, "a confirmation run started before the protocol was committed"
    git = subprocess.run(["git", "log", "-1", "--format=%cI", study_v3.PROTOCOL_COMMIT], capture_output=True,
                         text=True, cwd=BENCH)
    if git.returncode != 0:
        pytest.skip("no git history here to check the protocol commit's time against")
    assert datetime.fromisoformat(git.stdout.strip()) == committed
