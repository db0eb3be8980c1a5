"""The tables and the figure of Results v3 (bench/protocol-v3.md), from the raw lines of bench/results/study.jsonl.

The analysis is the protocol's, fixed before the first confirmation run:
- primary: localaug with three rounds of teacher data (`iterations: 4`) minus plain fine-tuning, averaged over
  TREC and SNIPS within each data seed; a 95% t-interval and an exact sign-flip p over the data seeds;
- secondary: per task localaug - plain, three rounds - one round (student 3 - student 1 of the same run),
  localaug - steps (the step-matched control), and on TREC localaug - random (untargeted); t-test p-values,
  Holm-adjusted across every secondary test of every task, with Bonferroni-adjusted (simultaneous) intervals.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study_stats import averaged_over_tasks, clustered, final_accuracy, holm, iteration_accuracy, paired

STUDY = "v3"
PROTOCOL_COMMIT = "00f56f3"  # bench/protocol-v3.md as committed before the first confirmation run
PROTOCOL_COMMITTED_AT = "2026-12-07T00:29:19+00:00"  # its commit time (git log -1 --format=%cI 00f56f3)
PLANNED_DATA_SEEDS = tuple(range(20, 26))  # the protocol's compute plan: 6 data seeds
ARMS_PER_TASK = ("localaug", "plain", "steps")
PRIMARY_TASKS = ("trec", "snips")
ROUNDS = 3  # rounds of teacher data: students 0 (plain fine-tuning) to 3
TASK_ORDER = ["trec", "snips", "sst2"]
Run = dict[str, Any]


WITHHELD = "(Not shown until the confirmation is complete: see the primary result's line above.)"


def v3(runs: list[Run], phase: str) -> list[Run]:
    return [r for r in runs if r.get("study") == STUDY and r["phase"] == phase]


def _f(x: float | None, fmt: str = "{:+.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _ci(c: dict[str, Any]) -> str:
    if math.isnan(c["lo"]):  # one data seed: a difference, no interval
        return f"{_f(c['mean'])} (1 data seed)" if c["clusters"] == 1 else "-"
    return f"{_f(c['mean'])} [{_f(c['lo'])}, {_f(c['hi'])}]"


def _tasks(runs: list[Run]) -> list[str]:
    return sorted({r["task"] for r in runs}, key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else 99)


# ------------------------------------------------------------------ the stopping rule

def complete_data_seeds(runs: list[Run]) -> list[int]:
    """Data seeds whose every planned line is in: localaug, plain and steps on both primary tasks."""
    have = {(r["task"], r["data_seed"], r["arm"]) for r in v3(runs, "confirm")}
    seeds = sorted({ds for _, ds, _ in have})
    return [ds for ds in seeds if all((t, ds, a) in have for t in PRIMARY_TASKS for a in ARMS_PER_TASK)]


def is_complete(runs: list[Run], planned: tuple[int, ...] = PLANNED_DATA_SEEDS) -> bool:
    return set(planned) <= set(complete_data_seeds(runs))


def reportable(runs: list[Run], planned: tuple[int, ...] = PLANNED_DATA_SEEDS) -> list[Run]:
    """The raw lines the v3 analyses may read: the confirmation's only once every planned data seed is complete,
    so no table shows a partial confirmation while it runs (the protocol fixes when it is reported)."""
    if is_complete(runs, planned):
        return runs
    return [r for r in runs if not (r.get("study") == STUDY and r["phase"] == "confirm")]


def progress_line(runs: list[Run], planned: tuple[int, ...] = PLANNED_DATA_SEEDS) -> str:
    done = [ds for ds in complete_data_seeds(runs) if ds in planned]
    lines = len(v3(runs, "confirm"))
    return (f"**Confirmation in progress** (bench/protocol-v3.md, committed at {PROTOCOL_COMMIT}): {len(done)} of "
            f"{len(planned)} planned data seeds ({planned[0]}-{planned[-1]}) complete"
            f"{' (' + ', '.join(map(str, done)) + ')' if done else ''}, {lines} raw confirmation lines in all. "
            "**The primary is not yet reported**: it is computed once every planned data seed is in, or, if the "
            "study stops before, reported on the completed data seeds as incomplete.")


# ------------------------------------------------------------------ primary

def primary(runs: list[Run]) -> dict[str, Any]:
    conf = v3(runs, "confirm")
    per_task = [paired([r for r in conf if r["task"] == t], "localaug", "plain") for t in PRIMARY_TASKS]
    return clustered(averaged_over_tasks(per_task))


def primary_block(runs: list[Run], planned: tuple[int, ...] = PLANNED_DATA_SEEDS) -> list[str]:
    if not is_complete(runs, planned):
        return [progress_line(runs, planned)]
    c = primary(runs)
    shown = c["p_signflip"] < 0.05
    verdict = ("a gain over plain fine-tuning is shown" if shown and c["mean"] > 0 else "a loss is shown" if shown
               else "no difference is shown")
    seeds = ", ".join(f"{ds}: {_f(v)}" for ds, v in c["seed_means"].items())
    return [
        "| comparison | data seeds | mean difference, points [95% t-interval] | exact sign-flip p | data seeds up |",
        "|---|---:|---:|---:|---:|",
        f"| localaug (3 rounds) - plain, mean of TREC and SNIPS | {c['clusters']} | {_ci(c)} | "
        f"{_f(c['p_signflip'], '{:.3f}')} | {sum(v > 0 for v in c['seed_means'].values())} of {c['clusters']} |",
        "",
        f"Per data seed (points): {seeds}. As pre-registered (p < 0.05, two-sided): "
        f"**{verdict}**.",
    ]


# ------------------------------------------------------------------ secondary

def secondary_tests(runs: list[Run]) -> list[tuple[str, str, dict[int, list[float]]]]:
    """(task, comparison, per-data-seed differences) of every secondary test that has data, in the
    protocol's order."""
    conf = v3(runs, "confirm")
    out = []
    for t in _tasks(conf):
        mine = [r for r in conf if r["task"] == t]
        tests: list[tuple[str, str, str, Callable[[Run], float], Callable[[Run], float]]] = [
            ("localaug - plain", "localaug", "plain", final_accuracy, final_accuracy),
            ("3 rounds - 1 round", "localaug", "localaug", iteration_accuracy(ROUNDS), iteration_accuracy(1)),
            ("localaug - steps", "localaug", "steps", final_accuracy, final_accuracy),
            ("localaug - random", "localaug", "random", final_accuracy, final_accuracy),
        ]
        for name, a, b, va, vb in tests:
            d = paired(mine, a, b, va, vb)
            if d:
                out.append((t, name, d))
    return out


def secondary(runs: list[Run]) -> list[dict[str, Any]]:
    tests = secondary_tests(runs)
    m = max(len(tests), 1)
    rows = []
    for t, name, d in tests:
        c = clustered(d)
        adj = clustered(d, level=1 - 0.05 / m)  # Bonferroni: the m intervals hold together with 95%
        rows.append({"task": t, "comparison": name, **c, "adj_lo": adj["lo"], "adj_hi": adj["hi"]})
    for row, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = p
    return rows


def secondary_block(runs: list[Run]) -> list[str]:
    rows = secondary(runs)
    if not rows:
        return [WITHHELD]
    lines = ["| task | comparison | data seeds | mean difference, points | adjusted 95% interval (Bonferroni, "
             f"{len(rows)} tests) | unadjusted 95% interval | up / down | Holm-adjusted p |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        up = sum(v > 0 for v in r["seed_means"].values())
        down = sum(v < 0 for v in r["seed_means"].values())
        lines.append(f"| {r['task']} | {r['comparison']} | {r['clusters']} | {_f(r['mean'])} | "
                     f"[{_f(r['adj_lo'])}, {_f(r['adj_hi'])}] | [{_f(r['lo'])}, {_f(r['hi'])}] | {up} / {down} | "
                     f"{_f(r['p_holm'], '{:.3f}')} |")
    return lines


# ------------------------------------------------------------------ rounds

def rounds_block(runs: list[Run], phase: str) -> list[str]:
    """Per task, each student of the three-round localaug runs: test accuracy, its difference from plain
    fine-tuning (student 0) and from the student before, and the teacher examples it trained on."""
    mine = [r for r in v3(runs, phase) if r["arm"] == "localaug" and r["settings"]["iterations"] == ROUNDS + 1]
    if not mine:
        return [WITHHELD] if phase == "confirm" else ["No development run of three rounds."]
    lines = ["| task | data seeds | student (rounds of teacher data) | test accuracy, % (mean) | minus plain, points "
             "[95% CI] | minus the student before | teacher examples trained on (mean) | runs stopped before it |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in _tasks(mine):
        rs = [r for r in mine if r["task"] == t]
        seeds = ", ".join(str(s) for s in sorted({r["data_seed"] for r in rs}))
        for k in range(ROUNDS + 1):
            acc = statistics.fmean(100 * iteration_accuracy(k)(r) for r in rs)
            vs0 = clustered(paired(rs, "localaug", "localaug", iteration_accuracy(k), iteration_accuracy(0)))
            prev = (clustered(paired(rs, "localaug", "localaug", iteration_accuracy(k), iteration_accuracy(k - 1)))
                    if k else None)
            added = statistics.fmean(r["iterations"][min(k, len(r["iterations"]) - 1)]["train_size"]
                                     - r["iterations"][0]["train_size"] for r in rs)
            stopped = sum(len(r["iterations"]) <= k for r in rs)
            lines.append(f"| {t} | {seeds} | {k}{' (plain)' if k == 0 else ''} | {acc:.1f} | "
                         f"{_ci(vs0) if k else '-'} | {_ci(prev) if prev else '-'} | {added:.1f} | {stopped} |")
    return lines


# ------------------------------------------------------------------ figure

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "img" / "results-v3.png"


def figure_data(runs: list[Run]) -> list[dict[str, Any]]:
    """What the figure plots: each comparison's data-seed differences, mean and interval (the primary's 95%
    t-interval; the secondaries' Bonferroni-adjusted ones, as in the tables)."""
    out = []
    p = primary(runs)
    if p["clusters"]:
        out.append({"label": "primary: TREC + SNIPS, localaug - plain", "mean": p["mean"], "lo": p["lo"],
                    "hi": p["hi"], "points": list(p["seed_means"].values())})
    for r in secondary(runs):
        out.append({"label": f"{r['task']}: {r['comparison']}", "mean": r["mean"], "lo": r["adj_lo"],
                    "hi": r["adj_hi"], "points": list(r["seed_means"].values())})
    return json.loads(json.dumps(out, allow_nan=True).replace("NaN", "null"))


def figure_json(runs: list[Run]) -> str:
    return json.dumps(_rounded(figure_data(runs)), sort_keys=True)


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def write_figure(runs: list[Run], path: Path = FIGURE) -> None:
    """Paired differences per task and comparison, each data seed a dot, the mean and its interval a bar. The
    plotted numbers travel in the PNG's metadata, so a test can tell a stale figure from the raw lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = figure_data(runs)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(data) + 1.6))
    for y, d in enumerate(reversed(data)):
        ax.scatter(d["points"], [y] * len(d["points"]), s=14, color="0.55", zorder=2)
        if d["lo"] is not None:
            ax.plot([d["lo"], d["hi"]], [y, y], color="C0" if y < len(data) - 1 else "C3", lw=2.5, zorder=3)
        ax.scatter([d["mean"]], [y], s=40, color="black", zorder=4)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(range(len(data)), [d["label"] for d in reversed(data)], fontsize=8)
    ax.set_xlabel("difference in test accuracy, points (dots: data seeds; bar: 95% interval, adjusted for the "
                  "secondaries)", fontsize=8)
    ax.set_title("Results v3: localaug (three rounds of teacher data) on 2 CPU cores", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None, "Description": figure_json(runs)})
    plt.close(fig)


def figure_in_png(path: Path = FIGURE) -> str | None:
    """The numbers a committed figure was drawn from (its PNG metadata), or None when there is none."""
    if not path.exists():
        return None
    from PIL import Image

    with Image.open(path) as im:
        return im.info.get("Description")


def figure_block(runs: list[Run]) -> list[str]:
    if not figure_data(runs):
        return [WITHHELD.replace("Not shown", "No figure")]
    return [f"![Paired differences per task and comparison, Results v3](img/{FIGURE.name})", "",
            "Each row: the data seeds' paired differences (grey dots), their mean (black) and its interval (the "
            "primary's 95% t-interval in red; each secondary's Bonferroni-adjusted interval in blue). Drawn by "
            "`python bench/study_report.py --write` from bench/results/study.jsonl; tests/test_results_doc.py "
            "checks that the figure's numbers are the raw lines' numbers."]
