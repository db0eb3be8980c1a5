"""Does LLM2LLM help? Paired runs of plain fine-tuning, the paper's loop and localaug's recipe.

For every (data seed, training seed) pair this runs, with the same student, teacher, seed set and
training seed:

    paper            the paper's loop (recipe paper); its iteration 0 is plain fine-tuning
    localaug         the default recipe: list prompt, teacher verification, 3 tries per wrong seed,
                     a quarter of the seeds held out to decide whether the teacher's data is kept;
                     its final model is trained on all seeds (+ the kept data)
    localaug-random  the same recipe, untargeted: as many seed examples as were wrong, drawn at random

and prints mean paired differences in accuracy points with a 95% t-interval:

    paper - plain, localaug - plain, localaug - paper, localaug - localaug-random

    python bench/quality.py --task trec --seed-size 54 --iterations 2 --epochs 3 \
        --data-seeds 0 1 --train-seeds 0 1 2 3 4

Runs are ordinary run directories under --out (resumable: rerun the same command after a kill), and
the summary (JSON + plot) is written there too.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from localaug.backends import make_student, make_teacher
from localaug.config import RunConfig, resolve
from localaug.errors import UserError
from localaug.loop import Loop
from localaug.store import RunStore
from localaug.tasks.task import load_task

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


ARMS = {
    "paper": {"recipe": "paper", "target": "wrong"},
    "localaug": {"recipe": "localaug", "target": "wrong"},
    "localaug-random": {"recipe": "localaug", "target": "random"},
    "paper-random": {"recipe": "paper", "target": "random"},
    # The recipe plus low-margin error finding: at least a fifth of the loop's seeds are targeted.
    "localaug-margin": {"recipe": "localaug", "target": "wrong", "low_margin": 0.2},
}


def run_one(task_name: str, base: dict[str, Any], student: Any, out: Path) -> dict[str, Any]:
    task = load_task(task_name, base.get("data_dir"))
    cfg = resolve(RunConfig(**{k: v for k, v in base.items() if v is not None}), task.defaults)
    store = RunStore.open_for_run(out, cfg)
    t0 = time.perf_counter()
    try:
        result = Loop(task, cfg, store, student, lambda: make_teacher(cfg)).run()
    finally:
        store.unlock()
    stages = store.manifest.get("stages", {})
    its = result.iterations
    final = result.final or {"test_accuracy": its[-1]["test_accuracy"], "kept_iteration": len(its) - 1}
    return {
        "per_iteration": [r["test_accuracy"] for r in its],
        "final": final["test_accuracy"], "kept_iteration": final["kept_iteration"],
        "holdout": [r.get("holdout_accuracy") for r in its],
        "parsed": sum(v.get("parsed", 0) for k, v in stages.items() if k.endswith("/augment")),
        "verified": sum(v.get("verified", 0) for k, v in stages.items() if k.endswith("/verify")),
        "added": sum(r.get("new_examples", 0) for r in its),
        "seconds": round(sum(v.get("seconds", 0) for v in stages.values()), 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="trec")
    ap.add_argument("--seed-size", type=int)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--test-size", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--arms", nargs="+", default=["paper", "localaug", "localaug-random"], choices=list(ARMS))
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
    stem = Path(args.task).stem
    rows = []
    for ds in args.data_seeds:
        for ts in args.train_seeds:
            pair: dict[str, Any] = {"data_seed": ds, "train_seed": ts}
            for arm in args.arms:
                base = {"task": args.task, "seed": ds, "train_seed": ts, "iterations": args.iterations,
                        "seed_size": args.seed_size, "test_size": args.test_size, **ARMS[arm],
                        "student": args.student, "teacher": args.teacher, "cache_path": args.cache,
                        "student_settings": settings, "data_dir": args.data_dir}
                pair[arm] = run_one(args.task, base, student, Path(args.out) / f"{stem}-d{ds}-t{ts}-{arm}")
                r = pair[arm]
                print(f"data seed {ds} train seed {ts} {arm:15s}: iterations "
                      + " ".join(f"{a:.1%}" for a in r["per_iteration"])
                      + f" | final {r['final']:.1%} (kept data of iteration {r['kept_iteration']}, "
                        f"{r['parsed']} parsed, {r['verified']} verified, {r['wall_seconds']:.0f} s)", flush=True)
            first = args.arms[0]
            pair["plain"] = pair[first]["per_iteration"][0] if first.startswith("paper") else None
            rows.append(pair)
    summary = summarize(rows, args.arms)
    for name, v in summary.items():
        print(f"{name:28s}: {v['mean']:+.1f} points  95% CI [{v['lo']:+.1f}, {v['hi']:+.1f}]  "
              f"(n={v['n']} paired runs)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}-summary.json").write_text(json.dumps({"args": vars(args), "runs": rows,
                                                           "summary": summary}, indent=2))
    plot(rows, args.arms, out / f"{stem}-accuracy.png", args.task)
    return 0


def summarize(rows: list[dict[str, Any]], arms: list[str]) -> dict[str, dict[str, float]]:
    """Paired differences (points) between every arm's final model and plain fine-tuning / each other."""
    finals = {arm: [r[arm]["final"] for r in rows] for arm in arms}
    pairs: list[tuple[str, list[float], list[float]]] = []
    if rows and rows[0].get("plain") is not None:
        plain = [r["plain"] for r in rows]
        pairs += [(f"{arm} - plain", finals[arm], plain) for arm in arms]
    for a, b in (("localaug", "paper"), ("localaug", "localaug-random"), ("paper", "paper-random"),
                 ("localaug-margin", "localaug")):
        if a in finals and b in finals:
            pairs.append((f"{a} - {b}", finals[a], finals[b]))
    out = {}
    for name, a, b in pairs:
        m, lo, hi = interval([(x - y) * 100 for x, y in zip(a, b, strict=True)])
        out[name] = {"mean": m, "lo": lo, "hi": hi, "n": len(a)}
    return out


def plot(rows: list[dict[str, Any]], arms: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"paper": "tab:blue", "localaug": "tab:green", "localaug-random": "tab:orange",
              "paper-random": "tab:purple", "localaug-margin": "tab:red"}
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    n_slot = max(len(r[a]["per_iteration"]) for r in rows for a in arms)  # where the final models go
    for arm in arms:
        n = max(len(r[arm]["per_iteration"]) for r in rows)
        means = [statistics.fmean(r[arm]["per_iteration"][i] * 100 for r in rows
                                  if len(r[arm]["per_iteration"]) > i) for i in range(n)]
        ax.plot(range(n), means, marker="o", color=colors[arm], label=f"{arm} (mean per iteration)")
        final = statistics.fmean(r[arm]["final"] * 100 for r in rows)
        ax.scatter([n_slot - 0.1 + 0.1 * arms.index(arm)], [final], marker="*", s=140, color=colors[arm],
                   label=f"{arm} final model")
    if rows and rows[0].get("plain") is not None:
        ax.axhline(statistics.fmean(r["plain"] * 100 for r in rows), color="grey", linestyle="--",
                   label="plain fine-tuning (all seeds)")
    ax.set_xticks(list(range(n_slot)) + [n_slot])
    ax.set_xticklabels([str(i) for i in range(n_slot)] + ["final"])
    ax.set_xlabel("iteration (localaug: loop students are trained without the held-out seeds)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
