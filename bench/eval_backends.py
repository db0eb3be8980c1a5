"""The student's evaluation in llama.cpp (`eval_backend: llamacpp`) against transformers (the default), side by
side in one run: the same adapter, the same test rows, the same items, each backend timed on its own.

    .venv/bin/python bench/eval_backends.py --task gsm8k --train-rows 100 --epochs 2 --test-rows 100
    .venv/bin/python bench/eval_backends.py --task trec --train-rows 100 --epochs 2 --test-rows 500

1. Trains one adapter on --train-rows seed examples (as `localaug run` draws them), or takes --adapter.
2. Evaluates the test rows with transformers (evaluate.py: left-padded batches), then with llama.cpp
   (student/llamacpp.py: the base GGUF plus the adapter converted to a llama.cpp LoRA, the conversion timed:
   it happens before every evaluation), once per --llamacpp-base; model loading is never timed.
3. Prints and appends to --results one JSON line: seconds per backend, the speed ratio, the share of rows
   whose prediction is the same (GSM8K: the final number; classification: the label), accuracies.
Speed ratios need a quiet machine (llama.cpp's threads spin and collapse beside another busy process);
agreement does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "eval-backends.jsonl"


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--train-rows", type=int, default=100)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--test-rows", type=int, default=100)
    ap.add_argument("--test-offset", type=int, default=0)
    ap.add_argument("--adapter", type=Path, help="evaluate this adapter instead of training one")
    ap.add_argument("--student", default="gemma3-270m")
    ap.add_argument("--mode", choices=["score", "generate"], help="the task's default unless given")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--llamacpp-base", nargs="+", choices=["gguf", "f16"], default=["gguf"],
                    help="gguf: the student's own GGUF (Q4_K_M, what eval_backend llamacpp uses); f16: an f16 "
                         "GGUF of the dequantised weights transformers runs (made once in the cache folder); "
                         "both: one row each, against one transformers evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="how it was measured (machine, what ran beside it)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from localaug.data import sample_seed
    from localaug.student import load_student
    from localaug.student.llamacpp_student import LlamaCppEvalStudent
    from localaug.student.quiet import quiet_transformers
    from localaug.task import load_task

    quiet_transformers()
    task = load_task(args.task)
    mode = task.eval_mode(args.mode)
    test = task.load_split("test")[args.test_offset:][: args.test_rows]
    items = [task.eval_item(e, mode) for e in test]
    hf = load_student(args.student, epochs=args.epochs)
    adapter = args.adapter
    if adapter is None:
        seed = sample_seed(task.load_split("train"), size=args.train_rows, seed=args.seed,
                           stratify_by=task.stratify())
        adapter = Path(tempfile.mkdtemp(prefix=f"eval-backends-{task.name}-")) / "adapter"
        _, train_s = _timed(lambda: hf.train([task.train_item(e) for e in seed], adapter, seed=args.seed))
        print(f"trained on {len(seed)} rows in {train_s:.0f} s -> {adapter}", file=sys.stderr)
    hf.base_model()
    theirs, theirs_s = _timed(lambda: hf.evaluate(adapter, items))
    b = task.judge_all(test, theirs)
    for base in args.llamacpp_base:  # one llama.cpp evaluation per base GGUF, against the same transformers run
        lcpp = LlamaCppEvalStudent(hf, n_threads=args.threads, base=base)
        lcpp.evaluator()  # loaded before the clock starts, like transformers' model
        ours, ours_s = _timed(lambda lcpp=lcpp: lcpp.evaluate(adapter, items))
        lcpp.evaluator().close()
        a = task.judge_all(test, ours)
        same = sum(x["prediction"] == y["prediction"] for x, y in zip(a.rows, b.rows, strict=True))
        identical = sum(x.output == y.output for x, y in zip(ours, theirs, strict=True))
        row = {"task": task.name, "mode": mode, "test_rows": len(test), "test_offset": args.test_offset,
               "adapter": str(adapter), "train_rows": None if args.adapter else args.train_rows,
               "epochs": args.epochs, "llamacpp_base": base, "llamacpp_seconds": round(ours_s, 2),
               "transformers_seconds": round(theirs_s, 2), "speedup": round(theirs_s / ours_s, 2),
               "same_prediction": round(same / len(test), 4), "same_output": round(identical / len(test), 4),
               "llamacpp_accuracy": round(a.accuracy, 4), "transformers_accuracy": round(b.accuracy, 4),
               "threads": lcpp.n_threads or os.cpu_count(), "eval_batch_size": hf.plan.eval_batch_size,
               "cores": os.cpu_count(), "note": args.note, "measured": time.strftime("%Y-%m-%d")}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        print(json.dumps(row, sort_keys=True))
        print(f"{task.name} ({mode}, {len(test)} rows): llama.cpp ({base} base) {ours_s:.1f} s, transformers "
              f"{theirs_s:.1f} s -> {theirs_s / ours_s:.1f}x; same prediction {same}/{len(test)}; accuracy "
              f"{a.accuracy:.1%} (llama.cpp) vs {b.accuracy:.1%} (transformers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
