"""Markdown tables for docs/RESULTS.md from the summaries bench/quality.py wrote.

    python bench/quality_report.py runs/quality/trec-summary.json runs/quality/snips-summary.json ... \
        [--plot docs/img]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from quality import interval, plot  # type: ignore[import-not-found]  # bench/ is a folder of scripts


def _mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.1f} ± {sd:.1f}"


def task_tables(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    rows: list[dict[str, Any]] = doc["runs"]
    arms: list[str] = doc["args"]["arms"]
    task = Path(doc["args"]["task"]).stem
    out = [f"### {task}", "",
           f"seed set {doc['args']['seed_size']}, {doc['args']['iterations']} iterations, "
           f"epochs {doc['args']['epochs']}, test rows {doc['args']['test_size']}, "
           f"data seeds {doc['args']['data_seeds']} x training seeds {doc['args']['train_seeds']} "
           f"= {len(rows)} paired runs", "",
           "| model | test accuracy (mean ± SD over runs, %) | teacher examples the loop accepted (mean) | "
           "final model kept teacher data | wall time per run (s, median) |", "|---|---:|---:|---:|---:|"]
    if rows[0].get("plain") is not None:
        out.append(f"| plain fine-tuning | {_mean_sd([r['plain'] * 100 for r in rows])} | 0 | - | - |")
    for arm in arms:
        finals = [r[arm]["final"] * 100 for r in rows]
        kept = sum(r[arm]["kept_iteration"] > 0 and r[arm]["added"] > 0 for r in rows)
        if arm.startswith("paper"):
            kept = sum(r[arm]["added"] > 0 for r in rows)  # the paper's loop always keeps its last student
        added = statistics.fmean(r[arm]["added"] for r in rows)
        wall = statistics.median(r[arm]["wall_seconds"] for r in rows)
        out.append(f"| {arm} | {_mean_sd(finals)} | {added:.1f} | {kept}/{len(rows)} | {wall:.0f} |")
    out += ["", "| paired difference | mean (points) | 95% CI | n |", "|---|---:|---:|---:|"]
    for name, v in doc["summary"].items():
        out.append(f"| {name} | {v['mean']:+.1f} | [{v['lo']:+.1f}, {v['hi']:+.1f}] | {v['n']} |")
    # Per data seed: how much of the spread is the training seed alone.
    out += ["", "| data seed | plain: mean ± SD over training seeds |", "|---:|---:|"]
    for ds in doc["args"]["data_seeds"]:
        xs = [r["plain"] * 100 for r in rows if r["data_seed"] == ds and r.get("plain") is not None]
        if xs:
            out.append(f"| {ds} | {_mean_sd(xs)} |")
    for arm in (a for a in arms if a.startswith("localaug")):
        iters = [r[arm]["per_iteration"] for r in rows]
        n = max(len(x) for x in iters)
        means = [statistics.fmean(x[i] * 100 for x in iters if len(x) > i) for i in range(n)]
        held = [r[arm]["holdout"] for r in rows]
        hmeans = [statistics.fmean(h[i] * 100 for h in held if len(h) > i and h[i] is not None) for i in range(n)]
        gains = [(x[-1] - x[0]) * 100 for x in iters if len(x) > 1]
        m, lo, hi = interval(gains) if len(gains) > 1 else (float("nan"),) * 3
        out += ["", f"{arm}'s loop students (trained without the held-out quarter): test accuracy by "
                "iteration " + ", ".join(f"{a:.1f}" for a in means) + "; held-out seed accuracy "
                + ", ".join(f"{a:.1f}" for a in hmeans)
                + f"; last minus first iteration {m:+.1f} points [{lo:+.1f}, {hi:+.1f}] (n={len(gains)})."]
    return out + [""]


def main(argv: list[str]) -> int:
    """Tables to stdout; with --plot DIR, each summary's plot redrawn as DIR/<task>-accuracy.png."""
    plot_dir = None
    if "--plot" in argv:
        k = argv.index("--plot")
        plot_dir = Path(argv[k + 1])
        argv = argv[:k] + argv[k + 2:]
    for p in argv:
        print("\n".join(task_tables(Path(p))))
        if plot_dir:
            doc = json.loads(Path(p).read_text())
            plot_dir.mkdir(parents=True, exist_ok=True)
            task = Path(doc["args"]["task"]).stem
            plot(doc["runs"], doc["args"]["arms"], plot_dir / f"{task}-accuracy.png", task)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
