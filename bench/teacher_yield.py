"""What the teacher's output is worth: parse rate, verification rate, and a file to judge labels by hand.

For one task it draws a seed set, picks N seed examples as if the student had got them wrong, and asks the
teacher for new examples with the paper's prompt and with localaug's list prompt; every candidate then goes
through the teacher verifier. It prints, per prompt, how many completions parsed, why the others failed,
and how many passed verification, and writes every candidate (with its verdict) to a JSONL file with an
empty `judged_correct` field for a person to fill in:

    python bench/teacher_yield.py --task trec --n 25 --per-wrong 2 --out runs/yield

`--precision FILE` reads such a file back once judged and prints label precision before and after
verification.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from localaug.augment import Target, augment
from localaug.backends import make_teacher
from localaug.config import RunConfig, resolve
from localaug.data import sample_seed
from localaug.errors import UserError
from localaug.tasks.task import load_task
from localaug.verify import verify_with_teacher


def _some_wrong_answer(task: Any, data: dict[str, Any], rng: random.Random) -> str | None:
    """A plausible wrong student answer for the paper's prompt (which shows it to the teacher)."""
    if task.kind.name == "classification":
        return rng.choice([k for k in task.labels if k != data["label"]])
    if task.kind.name == "multiple_choice":
        return str((int(data["label"]) + 1 + rng.randrange(4)) % 5)
    return None


def collect(args: argparse.Namespace) -> int:
    task = load_task(args.task, args.data_dir)
    cfg = resolve(RunConfig(task=args.task, teacher=args.teacher, cache_path=args.cache), task.defaults)
    teacher = make_teacher(cfg)
    pool = task.load_split("train")
    stratify = task.label_of if task.kind.name == "classification" else None
    seed = sample_seed(pool, size=args.seed_size or cfg.seed_size, seed=args.seed, stratify_by=stratify)
    rng = random.Random(args.seed)
    targets = rng.sample(seed, min(args.n, len(seed)))
    wrong = [Target(e, _some_wrong_answer(task, e.data, rng)) for e in targets]
    out_rows: list[dict[str, Any]] = []
    print(f"{task.name}: {len(targets)} seed examples x {args.per_wrong} samples per prompt")
    for name, shots in (("paper", 0), ("list", args.shots)):
        res = augment(task, teacher, wrong, iteration=0, per_wrong=args.per_wrong, run_seed=args.seed,
                      max_retries=0, shots=shots, pool=seed)
        ver = verify_with_teacher(task, teacher, res.accepted, seed, run_seed=args.seed)
        kept = {e.id for e in ver.accepted}
        reasons = Counter(r["reason"].split(":")[0] for r in res.rejected)
        print(f"  {name:5s} prompt: {res.completions} completions, {len(res.accepted)} parsed "
              f"({dict(reasons)} rejected), {len(ver.accepted)} verified"
              + (" (verification skipped: no discrete answer)" if ver.skipped else ""))
        for e in res.accepted:
            out_rows.append({"prompt": name, "id": e.id, "seed_id": e.meta.get("seed_id"), **e.data,
                             "verified": e.id in kept, "judged_correct": None})
    path = Path(args.out) / f"{Path(args.task).stem}-candidates.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in out_rows))
    print(f"candidates to judge: {path}")
    return 0


def precision(path: Path) -> int:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    judged = [r for r in rows if r.get("judged_correct") is not None]
    print(f"{path}: {len(judged)} of {len(rows)} candidates judged")
    for prompt in sorted({r["prompt"] for r in judged}):
        mine = [r for r in judged if r["prompt"] == prompt]
        ver = [r for r in mine if r["verified"]]

        def share(xs: list[dict[str, Any]]) -> str:
            return f"{sum(r['judged_correct'] for r in xs)}/{len(xs)}" + (
                f" = {sum(r['judged_correct'] for r in xs) / len(xs):.0%}" if xs else "")

        print(f"  {prompt:5s} prompt: label correct before verification {share(mine)}, "
              f"after {share(ver)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="trec")
    ap.add_argument("--n", type=int, default=25, help="seed examples to ask about")
    ap.add_argument("--per-wrong", type=int, default=2)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--seed-size", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher", default="gemma3-270m")
    ap.add_argument("--cache", help="teacher cache (default: the user cache)")
    ap.add_argument("--out", default="runs/yield")
    ap.add_argument("--data-dir")
    ap.add_argument("--precision", type=Path, help="a judged candidates file: print label precision")
    args = ap.parse_args(argv)
    try:
        return precision(args.precision) if args.precision else collect(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return UserError.exit_code


if __name__ == "__main__":
    sys.exit(main())
