"""Does LLM2LLM help? Paired runs of plain fine-tuning, the paper's loop, and an untargeted control.

For every (data seed, training seed) pair this runs the loop twice with the same student, teacher and
budget: `target=wrong` (the paper: teacher examples modelled on the seed examples the student gets wrong)
and `target=random` (the control: as many teacher examples, modelled on random seed examples). Plain
fine-tuning is iteration 0 of the same run, so every comparison is paired. It prints the mean paired
difference with a 95% t-interval:

    llm2llm - plain      final loop student vs iteration 0
    llm2llm - control    targeted vs untargeted, same number of teacher calls asked

    python bench/quality.py --task trec --seed-size 54 --iterations 3 --data-seeds 0 1 --train-seeds 0 1 2 3 4

Runs are ordinary run directories under --out (resumable: rerun the same command after a kill).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from localaug.backends import make_student, make_teacher
from localaug.config import RunConfig
from localaug.errors import UserError
from localaug.loop import Loop
from localaug.store import RunStore
from localaug.tasks import load_task

# Two-sided 95% t quantiles by degrees of freedom (no scipy needed for this one table).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    if df <= 0:
        return math.nan
    keys = sorted(k for k in _T95 if k <= df)
    return _T95[keys[-1]] if df < 30 else 1.96


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of paired differences (in accuracy points)."""
    m = statistics.fmean(diffs)
    if len(diffs) < 2:
        return m, math.nan, math.nan
    half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return m, m - half, m + half


def run_one(task_name: str, base: dict[str, Any], student: Any, out: Path) -> list[dict[str, Any]]:
    task = load_task(task_name, base.get("data_dir"))
    cfg = RunConfig(**base).resolve(task.defaults)
    store = RunStore.open_for_run(out, cfg)
    try:
        result = Loop(task, cfg, store, student, lambda: make_teacher(cfg)).run()
    finally:
        store.unlock()
    return result.iterations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="trec")
    ap.add_argument("--seed-size", type=int)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--test-size", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--student", default="gemma3-270m")
    ap.add_argument("--teacher", default="gemma3-270m")
    ap.add_argument("--cache", help="teacher cache (default: the user cache)")
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--data-dir", help="data root (default: $LOCALAUG_DATA_DIR, then ./data)")
    args = ap.parse_args(argv)
    try:
        return _compare(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return UserError.exit_code


def _compare(args: argparse.Namespace) -> int:
    # The task card's training defaults, then --epochs; the one student object serves every run.
    settings = dict(load_task(args.task, args.data_dir).defaults.get("student_settings") or {})
    if args.epochs:
        settings["epochs"] = args.epochs
    student = make_student(args.student, settings)
    rows = []
    for ds in args.data_seeds:
        for ts in args.train_seeds:
            pair: dict[str, Any] = {"data_seed": ds, "train_seed": ts}
            for arm in ("wrong", "random"):
                base = {"task": args.task, "seed": ds, "train_seed": ts, "iterations": args.iterations,
                        "seed_size": args.seed_size, "test_size": args.test_size, "target": arm,
                        "student": args.student, "teacher": args.teacher, "cache_path": args.cache,
                        "student_settings": settings, "data_dir": args.data_dir}
                out = Path(args.out) / f"{Path(args.task).stem}-d{ds}-t{ts}-{arm}"
                its = run_one(args.task, base, student, out)
                pair[arm] = [r["test_accuracy"] for r in its]
                print(f"data seed {ds} train seed {ts} {arm:6s}: " +
                      " ".join(f"{a:.1%}" for a in pair[arm]), flush=True)
            rows.append(pair)
    plain = [r["wrong"][0] for r in rows]
    final = [r["wrong"][-1] for r in rows]
    control = [r["random"][-1] for r in rows]
    summary = {}
    for name, a, b in (("llm2llm - plain", final, plain), ("llm2llm - control", final, control),
                       ("control - plain", control, plain)):
        m, lo, hi = interval([(x - y) * 100 for x, y in zip(a, b, strict=True)])
        summary[name] = {"mean": m, "lo": lo, "hi": hi, "n": len(a)}
        print(f"{name:18s}: {m:+.1f} points  95% CI [{lo:+.1f}, {hi:+.1f}]  (n={len(a)} paired runs)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{Path(args.task).stem}-summary.json").write_text(json.dumps({"args": vars(args), "runs": rows,
                                                                          "summary": summary}, indent=2))
    _plot(rows, out / f"{Path(args.task).stem}-accuracy.png", args.task)
    return 0


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for arm, color in (("wrong", "tab:blue"), ("random", "tab:orange")):
        n = max(len(r[arm]) for r in rows)
        means = [statistics.fmean(r[arm][i] * 100 for r in rows if len(r[arm]) > i) for i in range(n)]
        ax.plot(range(n), means, marker="o", color=color,
                label="LLM2LLM (targeted)" if arm == "wrong" else "control (random seeds)")
        for r in rows:
            ax.plot(range(len(r[arm])), [a * 100 for a in r[arm]], color=color, alpha=0.15)
    ax.set_xlabel("iteration (0 = plain fine-tuning)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
