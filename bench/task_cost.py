"""What one confirmation run of a task would cost on this machine, from a short measurement of its parts.

    python bench/task_cost.py measure --task casehold --seed-size 100 --epochs 1 --test-rows 50 --teacher-seeds 2
    python bench/task_cost.py from-run RUN_DIR --teacher-candidates 30 --teacher-seconds 3120 --teacher-accepted 13
    python bench/task_cost.py measure --task gsm8k --seed-size 100 --epochs 1 --test-rows 50 --eval-backend llamacpp

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
`from-run` takes the parts from a study run that was stopped (its finished stages) and the teacher's cost
from elsewhere (e.g. bench/teacher_yield.py). Each measurement is appended as one JSON line to --results
(bench/results/task-costs.jsonl); bench/study_report.py makes the cost table of docs/RESULTS.md from it with
`estimate()` below. The estimate is labelled as one; only the parts are measured. --eval-backend llamacpp
measures the student's evaluation in llama.cpp (`eval_backend: llamacpp`, student/llamacpp.py); each record
says which backend scored it ("eval_backend").
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
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "task-costs.jsonl"


def estimate(m: dict[str, Any], confirm_rows: int = 200, preflight: int = 64) -> dict[str, float]:
    """Seconds of one `localaug` confirmation run (as bench/study.py runs it) and of its step-matched
    control, from the measured parts `m`. Out-of-fold students never saw the examples they judge, so their
    error rate is taken as the plain student's test error rate (its seed error rate where no test row was
    scored)."""
    step_s = m["train_seconds"] / m["train_steps"]
    test_row_s = m["test_seconds"] / m["test_rows"] if m.get("test_rows") else m["seed_seconds"] / m["seed_rows"]
    seed_row_s = m["seed_seconds"] / m["seed_rows"]
    cand_s = m["teacher_seconds"] / m["teacher_candidates"]
    error = 1 - (m["test_accuracy"] if m.get("test_rows") else m["seed_accuracy"])
    n = m["seed_size"]
    wrong = round(error * n)
    added = round(wrong * m["per_wrong"] * m["teacher_accepted"] / m["teacher_candidates"])
    steps0 = round(m["train_steps"] * m["full_epochs"] / m["epochs"])
    steps1 = round(steps0 * (n + added) / n)
    return {
        "students": (steps0 + steps0 + steps1) * step_s,  # iteration 0, two folds of half the seeds, iteration 1
        "scoring": 2 * confirm_rows * test_row_s + 3 * n * seed_row_s,  # test twice; seeds twice; folds once
        "teacher": (min(preflight, n) / 2 + wrong * m["per_wrong"]) * cand_s,  # a preflight call ~ half a candidate
        "steps_control": steps1 * step_s + confirm_rows * test_row_s + n * seed_row_s,
        "wrong": wrong, "candidates": wrong * m["per_wrong"],
        "step_s": step_s, "test_row_s": test_row_s, "candidate_s": cand_s,  # the measured units, for the table
    }


def _localaug(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "localaug"), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _parts(run: Path) -> dict[str, Any]:
    """The measured parts of a run directory's finished iteration-0 stages."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    train, seed, test = stages["iter_00/train"], stages["iter_00/eval_seed"], stages.get("iter_00/eval_test", {})
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return {"task": Path(cfg["task"]).stem, "seed_size": train["train_size"], "train_steps": train["steps"],
            "train_seconds": train["seconds"], "epochs": (cfg.get("student_settings") or {}).get("epochs", 6.0),
            "seed_rows": seed["total"], "seed_seconds": seed["seconds"], "seed_accuracy": seed["accuracy"],
            "test_rows": test.get("total", 0), "test_seconds": test.get("seconds", 0.0),
            "test_accuracy": test.get("accuracy"), "eval_mode": seed["eval_mode"],
            "eval_backend": cfg.get("eval_backend") or "transformers"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    me = sub.add_parser("measure", help="run the parts now")
    me.add_argument("--task", required=True)
    me.add_argument("--seed-size", type=int, required=True)
    me.add_argument("--test-rows", type=int, default=100, help="test rows to score in the measurement")
    me.add_argument("--teacher-seeds", type=int, default=3)
    me.add_argument("--epochs", type=float, help="train this many epochs in the measurement (default: the card's)")
    me.add_argument("--out", type=Path, help="keep the run and the teacher's output here (default: a temp dir)")
    me.add_argument("--eval-backend", choices=["transformers", "llamacpp"], default="transformers",
                    help="the student's evaluation engine in the measured run")
    fr = sub.add_parser("from-run", help="take the parts from a stopped study run")
    fr.add_argument("run", type=Path)
    fr.add_argument("--teacher-candidates", type=int, required=True)
    fr.add_argument("--teacher-seconds", type=float, required=True)
    fr.add_argument("--teacher-accepted", type=int, required=True)
    for p in (me, fr):
        p.add_argument("--per-wrong", type=int, default=3)
        p.add_argument("--full-epochs", type=float, default=6.0,
                       help="the epochs of a real run, for the estimate (gemma3-270m's card: 6)")
        p.add_argument("--note", default="", help="how it was measured (threads, what ran beside it)")
        p.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.mode == "measure":
        m = _measure(args)
    else:
        m = {**_parts(args.run), "teacher_candidates": args.teacher_candidates,
             "teacher_seconds": args.teacher_seconds, "teacher_accepted": args.teacher_accepted, "source": "from-run"}
    m.update(per_wrong=args.per_wrong, full_epochs=args.full_epochs, note=args.note, cores=os.cpu_count(),
             measured=time.strftime("%Y-%m-%d"))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(m, sort_keys=True) + "\n")
    e = estimate(m)
    print(json.dumps(m, sort_keys=True))
    print(f"estimate of one localaug confirmation run: students {e['students'] / 60:.0f} min, scoring "
          f"{e['scoring'] / 60:.0f} min, teacher {e['teacher'] / 60:.0f} min ({e['candidates']} candidates); "
          f"its step-matched control {e['steps_control'] / 60:.0f} min")
    return 0


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out or Path(tempfile.mkdtemp(prefix=f"cost-{args.task}-"))
    out.mkdir(parents=True, exist_ok=True)
    config = out / "plain.yaml"
    config.write_text(f"task: {args.task}\nrecipe: paper\niterations: 1\npreflight: 0\nseed_size: {args.seed_size}\n"
                      f"test_size: {args.test_rows}\ntest_offset: 300\neval_backend: {args.eval_backend}\n"
                      + (f"student_settings: {{epochs: {args.epochs}}}\n" if args.epochs else ""), encoding="utf-8")
    run = out / "plain"
    _localaug("run", "--config", str(config), "--out", str(run))
    verdicts = [json.loads(x) for x in (run / "iter_00" / "eval_seed.jsonl").read_text().splitlines()]
    seeds = [json.loads(x) for x in (run / "seed.jsonl").read_text().splitlines()]
    by_id = {v["id"]: v for v in verdicts}
    # The teacher is asked about seed examples the plain student got wrong; a student that fits its seed set
    # gets none wrong (the study finds targets out of fold), and then any seed example costs the same.
    picked = ([s for s in seeds if not by_id.get(s["id"], {}).get("correct", True)]
              + [s for s in seeds if by_id.get(s["id"], {}).get("correct", True)])[: args.teacher_seeds]
    rows = [{**s, "prediction": by_id.get(s["id"], {}).get("prediction")} for s in picked]
    (out / "wrong.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cache = out / "teacher-cache.sqlite"  # empty: every teacher call is made and timed (model load included)
    seconds = _localaug("generate", "--task", args.task, "--input", str(out / "wrong.jsonl"),
                        "--pool", str(run / "seed.jsonl"), "--per-wrong", str(args.per_wrong),
                        "--out", str(out / "generated.jsonl"), "--cache", str(cache))
    accepted = len((out / "generated.jsonl").read_text().splitlines())
    print(f"run and teacher output: {out}")
    return {**_parts(run), "teacher_candidates": len(picked) * args.per_wrong, "teacher_seconds": round(seconds, 1),
            "teacher_accepted": accepted, "source": "measure"}


if __name__ == "__main__":
    sys.exit(main())
