"""What one confirmation run of a task would cost on this machine, from a short measurement of its parts.

    python bench/task_cost.py --task casehold --seed-size 100 --epochs 1 --test-rows 50 --teacher-seeds 2

Measures, with the shipped code and models (each part an ordinary `localaug` command):
  1. plain fine-tuning of the student on --seed-size seed examples, then scoring --test-rows test rows (from
     row 300 on, as confirmation runs do) and the seed set: `localaug run --recipe paper`, one iteration, no
     preflight; --epochs shortens this training, and the estimate scales its steps to --full-epochs;
  2. the teacher writing and verifying --per-wrong examples for each of --teacher-seeds seed examples that
     the plain student got wrong (`localaug generate` with the list prompt and the verifier, an empty cache).
Then prints the seconds of each part, the cost per unit (training step, test row, teacher candidate), and an
estimate of one `localaug` confirmation run as bench/study.py runs it (two out-of-fold students on half the
seeds each, the preflight, every wrong seed example asked --per-wrong times, a second student, 200 or
--confirm-rows test rows), with the plain student's test error rate standing in for the out-of-fold one.
The estimate is labelled as one; only the parts are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _localaug(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "localaug"), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--seed-size", type=int, required=True)
    ap.add_argument("--test-rows", type=int, default=100, help="test rows to score in the measurement")
    ap.add_argument("--confirm-rows", type=int, default=200, help="test rows of the estimated confirmation run")
    ap.add_argument("--teacher-seeds", type=int, default=3)
    ap.add_argument("--per-wrong", type=int, default=3)
    ap.add_argument("--preflight", type=int, default=64)
    ap.add_argument("--epochs", type=float, help="train this many epochs in the measurement (default: the card's)")
    ap.add_argument("--full-epochs", type=float, default=6.0,
                    help="the epochs of a real run, for the estimate (gemma3-270m's card: 6)")
    ap.add_argument("--out", type=Path, help="keep the run and the teacher's output here (default: a temp dir)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix=f"cost-{args.task}-"))
    out.mkdir(parents=True, exist_ok=True)
    config = out / "plain.yaml"
    config.write_text(f"task: {args.task}\nrecipe: paper\niterations: 1\npreflight: 0\nseed_size: {args.seed_size}\n"
                      f"test_size: {args.test_rows}\ntest_offset: 300\n"
                      + (f"student_settings: {{epochs: {args.epochs}}}\n" if args.epochs else ""), encoding="utf-8")
    run = out / "plain"
    wall_plain = _localaug("run", "--config", str(config), "--out", str(run))
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    train, test, seed = stages["iter_00/train"], stages["iter_00/eval_test"], stages["iter_00/eval_seed"]
    verdicts = [json.loads(x) for x in (run / "iter_00" / "eval_seed.jsonl").read_text().splitlines()]
    wrong_rows = [v for v in verdicts if not v.get("correct")]
    seeds = [json.loads(x) for x in (run / "seed.jsonl").read_text().splitlines()]
    by_id = {v["id"]: v for v in verdicts}
    # The teacher is asked about seed examples the plain student got wrong; a student that fits its seed set
    # gets none wrong (the study finds targets out of fold), and then any seed example costs the same.
    picked = ([s for s in seeds if not by_id.get(s["id"], {}).get("correct", True)]
              + [s for s in seeds if by_id.get(s["id"], {}).get("correct", True)])[: args.teacher_seeds]
    rows = [{**s, "prediction": by_id.get(s["id"], {}).get("prediction")} for s in picked]
    (out / "wrong.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cache = out / "teacher-cache.sqlite"  # empty: every teacher call is made and timed
    wall_teacher = _localaug("generate", "--task", args.task, "--input", str(out / "wrong.jsonl"),
                             "--pool", str(run / "seed.jsonl"), "--per-wrong", str(args.per_wrong),
                             "--out", str(out / "generated.jsonl"), "--cache", str(cache))
    accepted = len((out / "generated.jsonl").read_text().splitlines())
    candidates = len(picked) * args.per_wrong

    step_s = train["seconds"] / train["steps"]
    row_s = test["seconds"] / test["total"]
    seed_row_s = seed["seconds"] / seed["total"]
    cand_s = wall_teacher / candidates
    # Out-of-fold students never saw the examples they judge: their error rate is about the test error rate.
    wrong = round((1 - test["accuracy"]) * args.seed_size)
    added = round(wrong * args.per_wrong * accepted / candidates)
    steps0 = round(train["steps"] * args.full_epochs / args.epochs) if args.epochs else train["steps"]
    steps1 = round(steps0 * (args.seed_size + added) / args.seed_size)
    estimate = {
        "two students (seed set, then seed set + teacher data)": (steps0 + steps1) * step_s,
        "two out-of-fold students on half the seeds each": steps0 * step_s,
        "test rows, scored twice": 2 * args.confirm_rows * row_s,
        "seed set and out-of-fold halves, scored": 3 * args.seed_size * seed_row_s,
        "teacher preflight (one verifier call per seed, estimated as a candidate's cost)":
            min(args.preflight, args.seed_size) * cand_s / 2,
        f"teacher: {wrong} wrong seeds x {args.per_wrong} candidates": wrong * args.per_wrong * cand_s,
    }
    print(f"# {args.task}: measured on {os.cpu_count()} cores")
    print(f"plain run (train {train['train_size']} seeds, {train['steps']} steps; score {test['total']} test rows "
          f"and {seed['total']} seed rows): {wall_plain:.0f} s wall")
    print(f"  training {train['seconds']:.0f} s = {step_s:.1f} s per step; "
          f"peak RSS {train.get('peak_rss_mb', 0):.0f} MB")
    print(f"  test rows {test['seconds']:.0f} s = {row_s:.2f} s per row ({test['eval_mode']}); "
          f"plain test accuracy {100 * test['accuracy']:.1f}%")
    print(f"  seed rows {seed['seconds']:.0f} s; the student got {len(wrong_rows)} of {len(verdicts)} seeds wrong")
    print(f"teacher: {candidates} candidates for {len(picked)} seeds in {wall_teacher:.0f} s wall "
          f"(model load included) = {cand_s:.0f} s per candidate; {accepted} accepted")
    print(f"# estimate of one localaug confirmation run ({args.seed_size} seeds, {args.confirm_rows} test rows):")
    for what, seconds in estimate.items():
        print(f"  {what}: {seconds / 60:.0f} min")
    print(f"  total: {sum(estimate.values()) / 60:.0f} min (an estimate from the parts above)")
    print(f"run and teacher output: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
