"""Every table of docs/RESULTS.md, regenerated from the raw per-run results (bench/results/study.jsonl).

    python bench/study_report.py --write     # rewrite the generated blocks of docs/RESULTS.md
    python bench/study_report.py --check     # exit 1 if the document's tables differ (a test runs this)

A generated block sits between `<!-- generated:NAME -->` and `<!-- /generated -->`; everything else in the
document is prose. Statistics: paired differences per (data seed, training seed), averaged within each
data seed first, so the 95% t-interval and the p-value treat data seeds (not runs) as the independent
units; p-values are Holm-adjusted across the comparisons of one task and phase.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import study_v3  # type: ignore[import-not-found]  # bench/ is a folder of scripts
from study_stats import clustered, holm, paired  # type: ignore[import-not-found]  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "study.jsonl"
DOC = ROOT / "docs" / "RESULTS.md"
TASKS = ["trec", "snips", "sst2", "gsm8k", "casehold"]
COMPARISONS = [("localaug", "plain"), ("localaug", "steps"), ("paper", "plain"), ("localaug", "random"),
               ("localaug-styled", "plain"), ("localaug-styled", "localaug"),
               ("localaug", "paper"), ("localaug-270m", "plain"), ("localaug-filter", "plain"),
               ("localaug-holdout", "plain"), ("localaug-filter", "localaug"), ("localaug-holdout", "localaug")]
BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated -->)", re.DOTALL)


def load(path: Path = RESULTS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _f(x: float, fmt: str = "{:+.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _ci(c: dict[str, float]) -> str:
    return f"{_f(c['mean'])} [{_f(c['lo'])}, {_f(c['hi'])}]"


def comparison_table(runs: list[dict[str, Any]], phase: str) -> list[str]:
    lines = ["| task | comparison | mean difference, points [95% CI] | data seeds x training seeds | "
             "Holm-adjusted p |", "|---|---|---:|---:|---:|"]
    for task in TASKS:
        mine = [r for r in runs if r["task"] == task and r["phase"] == phase]
        rows = []
        for a, b in COMPARISONS:
            d = paired(mine, a, b)
            if d:
                rows.append((f"{a} - {b}", clustered(d)))
        adj = holm([c["p"] for _, c in rows])
        for (name, c), p in zip(rows, adj, strict=True):
            lines.append(f"| {task} | {name} | {_ci(c)} | {c['clusters']} x {c['pairs'] // max(c['clusters'], 1)} | "
                         f"{_f(p, '{:.3f}')} |")
    return lines


def arm_table(runs: list[dict[str, Any]], phase: str) -> list[str]:
    lines = ["| task | arm | runs | test accuracy, % (mean ± SD) | teacher examples added (mean) | "
             "final model kept teacher data | targets per round | test rows | minutes per run (median) |",
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for task in TASKS:
        mine = [r for r in runs if r["task"] == task and r["phase"] == phase]
        for arm in sorted({r["arm"] for r in mine if r["arm"] != "tune"}, key=_arm_order):
            rs = [r for r in mine if r["arm"] == arm]
            accs = [100 * r["final_test_accuracy"] for r in rs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            kept = sum(1 for r in rs if r["kept_iteration"] > 0 and r["added"] > 0)
            rows_ = sorted({f"{r['test_rows'][0]}-{r['test_rows'][0] + r['test_rows'][1] - 1}" for r in rs})
            lines.append(f"| {task} | {arm} | {len(rs)} | {statistics.fmean(accs):.1f} ± {sd:.1f} | "
                         f"{statistics.fmean(r['added'] for r in rs):.1f} | {kept}/{len(rs)} | {_budget(rs)} | "
                         f"{', '.join(rows_)} | {_minutes(rs)} |")
    return lines


def _budget(rs: list[dict[str, Any]]) -> str:
    """The teacher budget (max_targets): every wrong seed example, or a seeded share of them."""
    if all(r["teacher_counts"]["targets"] == 0 and r["added"] == 0 for r in rs):
        return "-"
    caps = sorted({r["settings"].get("max_targets") or 0 for r in rs})
    return ", ".join("all wrong" if c == 0 else f"at most {c}" for c in caps)


def _minutes(rs: list[dict[str, Any]]) -> str:
    """Median minutes per run; plain runs read off a localaug run's iteration 0 took no time of their own."""
    timed = [r["wall_seconds"] for r in rs if not r.get("derived_from")]
    return f"{statistics.median(timed) / 60:.1f}" if timed else "read off localaug"


def _arm_order(arm: str) -> tuple[int, str]:
    order = ["plain", "steps", "paper", "localaug", "random", "localaug-270m", "localaug-filter",
             "localaug-holdout", "tune"]
    return (order.index(arm) if arm in order else len(order), arm)


def run_table(runs: list[dict[str, Any]], phase: str) -> list[str]:
    lines = ["| task | data / train seed | arm | test accuracy by iteration, % | final, % | OOF wrong | "
             "targets | parsed | repeats | verified | added | preflight (teacher) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted((r for r in runs if r["phase"] == phase and r["arm"] != "tune"),
                    key=lambda r: (TASKS.index(r["task"]) if r["task"] in TASKS else 99, r["data_seed"],
                                   r["train_seed"], _arm_order(r["arm"]))):
        tc = r["teacher_counts"]
        its = ", ".join(_f(100 * x["test_accuracy"], "{:.1f}") for x in r["iterations"])
        pre = r.get("preflight") or {}
        wrong = r["iterations"][0].get("wrong") if len(r["iterations"]) > 1 else None
        lines.append(f"| {r['task']} | {r['data_seed']} / {r['train_seed']} | {r['arm']} | {its} | "
                     f"{100 * r['final_test_accuracy']:.1f} | {_f(wrong, '{}')} | {tc['targets']} | {tc['parsed']} | "
                     f"{tc['repeats']} | {tc['verified']} | {r['added']} | "
                     f"{_f(pre.get('teacher_accuracy', math.nan) * 100, '{:.0f}%')} |")
    return lines


def tune_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| task | epochs | data seeds | held-out seed accuracy, % (mean) | held-out examples per run |",
             "|---|---:|---|---:|---:|"]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["arm"] == "tune":
            groups[(r["task"], float(r["settings"]["student_settings"].get("epochs", 0)))].append(r)
    for (task, epochs), rs in sorted(groups.items(), key=lambda kv: (TASKS.index(kv[0][0]), kv[0][1])):
        held = [100 * r["iterations"][0]["holdout_accuracy"] for r in rs]
        lines.append(f"| {task} | {epochs:g} | {', '.join(str(r['data_seed']) for r in rs)} | "
                     f"{statistics.fmean(held):.1f} | {rs[0]['holdout_size']} |")
    return lines


def plain_check(runs: list[dict[str, Any]]) -> list[str]:
    """Development pairs that ran plain fine-tuning on its own: does it equal iteration 0 of localaug?"""
    plain = {(r["task"], r["data_seed"], r["train_seed"]): r["final_test_accuracy"]
             for r in runs if r["phase"] == "dev" and r["arm"] == "plain" and not r.get("derived_from")}
    pairs = [(plain[k], r["iterations"][0]["test_accuracy"]) for r in runs
             if r["phase"] == "dev" and r["arm"] == "localaug" and r["holdout_size"] == 0
             and (k := (r["task"], r["data_seed"], r["train_seed"])) in plain]
    same = sum(a == b for a, b in pairs)
    return [f"In {same} of {len(pairs)} development pairs, plain fine-tuning run on its own scored exactly what "
            "iteration 0 of the paired localaug run scored."]


# The paper's headline gains (Lee et al., 2024, abstract: "up to", the best over its seed-set sizes; LLM2LLM over
# fine-tuning on the seed data alone, Llama-2-7B student, GPT-3.5 teacher) and its ablations.
PAPER_GAINS = [("gsm8k", "GSM8K", 24.2), ("casehold", "CaseHOLD", 32.6), ("snips", "SNIPS", 32.0),
               ("trec", "TREC", 52.6), ("sst2", "SST-2", 39.8)]
PAPER_ABLATIONS = [
    ("Augment only from the seed data, not from teacher data", "better than from all data",
     "built in (only seed examples reach the teacher); not compared"),
    ("Fine-tune from the base model every iteration", "better than continuing training",
     "built in (every student starts from the base weights); not compared"),
]
SIZE = "270M student, 1.5B teacher"


def _v2_holm(runs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], float]]:
    """v2's localaug - plain per task, Holm-adjusted across the tasks (v2 adjusted within a task only)."""
    conf = [r for r in v2(runs) if r["phase"] == "confirm"]
    cs = {t: clustered(d) for t, _, _ in PAPER_GAINS if (d := paired([r for r in conf if r["task"] == t],
                                                                     "localaug", "plain"))}
    adj = holm([c["p"] for c in cs.values()])
    return {t: (c, p) for (t, c), p in zip(cs.items(), adj, strict=True)}


def claims_table(runs: list[dict[str, Any]]) -> list[str]:
    """The paper's claims against v3 (three rounds, pre-registered, Holm across every secondary test) and v2
    (one round; here Holm-adjusted across its three tasks, which v2 did not do)."""
    lines = ["| the paper's claim | paper | v3: three rounds, localaug - plain, points [adjusted 95% interval], "
             "Holm p | v2: one round, localaug - plain [unadjusted 95% CI], Holm p over 3 tasks | reproduced? |",
             "|---|---:|---|---|---|"]
    every = {(r["task"], r["comparison"]): r for r in study_v3.secondary(runs)}
    sec = {k: r for k, r in every.items() if r["clusters"] >= 2}  # one data seed gives no interval: no test
    old = _v2_holm(runs)
    for task, name, gain in PAPER_GAINS:
        r = sec.get((task, "localaug - plain"))
        one = every.get((task, "localaug - plain"))
        v3txt = (f"{_f(r['mean'])} [{_f(r['adj_lo'])}, {_f(r['adj_hi'])}], p {r['p_holm']:.3f} ({r['clusters']} "
                 "data seeds)" if r else f"{_f(one['mean'])} (1 data seed, no interval)" if one else "not run")
        v2txt = (f"{_ci(old[task][0])}, p {old[task][1]:.3f} ({old[task][0]['clusters']} data seeds)"
                 if task in old and old[task][0]["clusters"] >= 2 else "not run")
        if r:
            gain_shown = r["p_holm"] < 0.05 and r["mean"] > 0
            verdict = (f"a gain: {'yes' if gain_shown else 'no' if r['p_holm'] < 0.05 else 'not shown'}; "
                       f"its size: {'no' if r['adj_hi'] < gain else 'not excluded'} ({SIZE})")
        elif task in old and old[task][0]["clusters"] >= 2:
            c, p = old[task]
            verdict = (f"v2 only: a gain: {'yes' if p < 0.05 and c['mean'] > 0 else 'not shown'}; its size: "
                       f"{'no' if c['hi'] < gain else 'not excluded'} ({SIZE})")
        else:
            verdict = "not tested"
        lines.append(f"| LLM2LLM gain on {name} | up to +{gain:.1f} | {v3txt} | {v2txt} | {verdict} |")
    rounds = [sec[k] for k in sorted(sec) if k[1] == "3 rounds - 1 round"]
    if rounds:
        txt = "; ".join(f"{r['task']} {_f(r['mean'])} [{_f(r['adj_lo'])}, {_f(r['adj_hi'])}], p {r['p_holm']:.3f}"
                        for r in rounds)
        shown = [r["task"] for r in rounds if r["p_holm"] < 0.05 and r["mean"] > 0]
        lines.append("| Iterative augmentation | better than generating as much in one round | three rounds - one "
                     f"round of the same run (three rounds also bring more data): {txt}; as much data in one round: "
                     f"not run | not tested as the paper states it; more rounds better: "
                     f"{'yes on ' + ', '.join(shown) if shown else 'not shown'} |")
    else:
        lines.append("| Iterative augmentation | better than generating as much in one round | not measured | - | "
                     "not tested |")
    for claim, paper, ours in PAPER_ABLATIONS:
        lines.append(f"| {claim} | {paper} | {ours} | - | not tested |")
    return lines


def precision_table(_: list[dict[str, Any]]) -> list[str]:
    """Teacher label precision judged blind (bench/judged/*-judged.jsonl and *-verdicts.jsonl)."""
    from teacher_yield import precision_rows  # type: ignore[import-not-found]  # bench/ is a folder of scripts

    def pct(a: int, b: int) -> str:
        return f"{a}/{b} = {100 * a / b:.0f}%" if b else "-"

    lines = ["| task | teacher | candidates judged | label right before verification | kept by the verifier | "
             "label right after verification | wrong ones the verifier refused |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in precision_rows():
        wrong = r["n"] - r["correct"]
        lines.append(f"| {r['task']} | {r['teacher']} | {r['n']} | {pct(r['correct'], r['n'])} | {r['kept']} | "
                     f"{pct(r['kept_correct'], r['kept'])} | {pct(r['refused_wrong'], wrong)} |")
    return lines


COSTS = ROOT / "bench" / "results" / "task-costs.jsonl"
CONFIRM_ROWS = {"gsm8k": 300}  # the floor for GSM8K; 200 test rows elsewhere, as the study ran


def verifier_table(_: list[dict[str, Any]]) -> list[str]:
    """SST-2's candidates judged blind once, then kept or refused by each verifier setting (bench/verifier_arms.py)."""
    from verifier_arms import ARMS, JUDGED, arm_rows, stem  # type: ignore[import-not-found]

    if not (JUDGED / f"{stem('sst2', 'qwen2.5-coder-1.5b')}-judged.jsonl").exists():
        return ["(not judged yet)"]
    lines = ["| setting | candidates | judged examples of the task | judged right | kept | right among kept | "
             "non-examples kept | right ones refused |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in arm_rows("sst2"):
        lines.append(f"| {r['arm']} | {r['n']} | {r['examples']} | {r['right']} | {r['kept']} | "
                     f"{r['kept_right']}/{r['kept']} = {100 * r['kept_right'] / max(r['kept'], 1):.0f}% | "
                     f"{r['kept_non_examples']}/{r['n'] - r['examples']} | {r['refused_right']}/{r['right']} |")
    assert [r["arm"] for r in arm_rows("sst2")] == list(ARMS)
    return lines


def cost_table(_: list[dict[str, Any]]) -> list[str]:
    """What one confirmation run would cost, estimated from measured parts (bench/task_cost.py)."""
    from task_cost import estimate  # type: ignore[import-not-found]  # bench/ is a folder of scripts

    lines = ["| task | seeds | s per training step | s per test row | s per teacher candidate (kept) | "
             "student's accuracy when measured | one localaug run, estimated: students + scoring + teacher | "
             "with its step-matched control, x 5 data seeds |", "|---|---:|---:|---:|---:|---|---|---:|"]
    for m in load(COSTS) if COSTS.exists() else []:
        rows = CONFIRM_ROWS.get(m["task"], 200)
        e = estimate(m, confirm_rows=rows)
        run = e["students"] + e["scoring"] + e["teacher"]
        acc = (f"{100 * m['test_accuracy']:.0f}% of {m['test_rows']} test rows" if m["test_rows"]
               else f"{100 * m['seed_accuracy']:.0f}% of its {m['seed_rows']} seeds")
        task = m["task"] + (" (llama.cpp eval)" if m.get("eval_backend") == "llamacpp" else "")
        lines.append(f"| {task} | {m['seed_size']} | {e['step_s']:.0f} | {e['test_row_s']:.1f} | "
                     f"{e['candidate_s']:.0f} ({m['teacher_accepted']}/{m['teacher_candidates']}) | {acc} | "
                     f"{e['students'] / 60:.0f} min + {e['scoring'] / 60:.0f} min ({rows} test rows) + "
                     f"{e['teacher'] / 60:.0f} min ({e['candidates']} candidates) = {run / 3600:.1f} h | "
                     f"{5 * (run + e['steps_control']) / 3600:.0f} h |")
    return lines


def _study(name: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda rs: [r for r in rs if r.get("study", "v2") == name]


v2, v3only = _study("v2"), _study("v3")

BLOCKS: dict[str, Callable[[list[dict[str, Any]]], list[str]]] = {
    "task-costs": cost_table,
    "precision": precision_table,
    "verifier-arms": verifier_table,
    # v3's confirmation lines reach a table only once every planned data seed is in (study_v3.reportable).
    "claims": lambda rs: claims_table(study_v3.reportable(rs)),
    "v3-primary": study_v3.primary_block,
    "v3-secondary": lambda rs: study_v3.secondary_block(study_v3.reportable(rs)),
    "v3-rounds-confirm": lambda rs: study_v3.rounds_block(study_v3.reportable(rs), "confirm"),
    "v3-rounds-dev": lambda rs: study_v3.rounds_block(rs, "dev"),
    "v3-figure": lambda rs: study_v3.figure_block(study_v3.reportable(rs)),
    "v3-confirm-arms": lambda rs: _v3_confirm(arm_table, rs),
    "v3-confirm-runs": lambda rs: _v3_confirm(run_table, rs),
    "v3-dev-comparisons": lambda rs: comparison_table(v3only(rs), "dev"),
    "v3-dev-arms": lambda rs: arm_table(v3only(rs), "dev"),
    "v3-dev-runs": lambda rs: run_table(v3only(rs), "dev"),
    "plain-check": lambda rs: plain_check(v2(rs)),
    "confirm-comparisons": lambda rs: comparison_table(v2(rs), "confirm"),
    "confirm-arms": lambda rs: arm_table(v2(rs), "confirm"),
    "confirm-runs": lambda rs: run_table(v2(rs), "confirm"),
    "dev-comparisons": lambda rs: comparison_table(v2(rs), "dev"),
    "dev-arms": lambda rs: arm_table(v2(rs), "dev"),
    "dev-runs": lambda rs: run_table(v2(rs), "dev"),
    "tune": lambda rs: tune_table(v2(rs)),
}


def _v3_confirm(table: Callable[[list[dict[str, Any]], str], list[str]], runs: list[dict[str, Any]]) -> list[str]:
    mine = v3only(study_v3.reportable(runs))
    return table(mine, "confirm") if any(r["phase"] == "confirm" for r in mine) else [study_v3.WITHHELD]


def render(doc: str, runs: list[dict[str, Any]]) -> str:
    def fill(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"docs/RESULTS.md: unknown generated block '{name}'")
        return m.group(1) + "\n".join(BLOCKS[name](runs)) + "\n" + m.group(4)

    return BLOCK.sub(fill, doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    doc = args.doc.read_text(encoding="utf-8")
    runs = load(args.results)
    new = render(doc, runs)
    if args.write:
        args.doc.write_text(new, encoding="utf-8")
        if study_v3.figure_data(study_v3.reportable(runs)):
            study_v3.write_figure(study_v3.reportable(runs))
        return 0
    if new != doc:
        print(f"{args.doc}: the generated tables differ from {args.results}; run "
              "python bench/study_report.py --write", file=sys.stderr)
        return 1
    shown = study_v3.reportable(runs)
    if study_v3.figure_data(shown) and study_v3.figure_in_png() != study_v3.figure_json(shown):
        print(f"{study_v3.FIGURE}: the figure was drawn from other numbers; run python bench/study_report.py --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
