"""What a teacher's output is worth: label precision judged blind, before and after verification.

    python bench/teacher_yield.py collect --task trec --teacher qwen2.5-coder-1.5b     # ~4 min on 2 cores
    python bench/teacher_yield.py precision                                              # the table

`collect` draws the task's seed set (data seed 0), picks 25 seed examples as if the student had got them
wrong, asks the teacher for 2 new examples each with localaug's list prompt, and runs every parsed
candidate through the verifier. It writes two files under bench/judged/:

    <task>-<teacher>-blind.jsonl      id, intended label, text: what the judge reads, without any verdict
    <task>-<teacher>-verdicts.jsonl   id, whether the verifier kept it: not to be opened before judging
    <task>-<teacher>-rejected-blind.jsonl / -rejected-reasons.jsonl   the raw completions the parser or a
                                      check threw away, and why (so that false rejects can be judged too)

The judge (a person) adds `judged_correct` (true/false: does the text fit its intended label?) to every
row of the blind file, saved as <task>-<teacher>-judged.jsonl. `precision` joins judged and verdict files.
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
from localaug.task import load_task
from localaug.verify import verify_with_teacher

JUDGED = Path(__file__).resolve().parent / "judged"
SHORT = {"qwen2.5-coder-1.5b": "qwen1.5b", "gemma3-270m": "gemma270m"}


def _paths(task: str, teacher: str) -> tuple[Path, Path, Path]:
    stem = f"{task}-{SHORT.get(teacher, Path(teacher).stem)}"
    return JUDGED / f"{stem}-blind.jsonl", JUDGED / f"{stem}-verdicts.jsonl", JUDGED / f"{stem}-judged.jsonl"


def collect(args: argparse.Namespace) -> int:
    task = load_task(args.task, args.data_dir)
    settings = resolve(RunConfig(task=args.task, teacher=args.teacher, cache_path=args.cache,
                                 teacher_settings={"n_threads": args.threads} if args.threads else {}), task.defaults)
    teacher = make_teacher(settings)
    seed = sample_seed(task.load_split("train"), size=args.seed_size or settings.seed_size, seed=0,
                       stratify_by=task.stratify())
    rng = random.Random(0)
    targets = [Target(e, None) for e in rng.sample(seed, min(args.n, len(seed)))]
    res = augment(task, teacher, targets, iteration=0, per_wrong=args.per_wrong, run_seed=0, max_retries=0,
                  shots=4, pool=seed)
    ver = verify_with_teacher(task, teacher, res.accepted, seed, run_seed=0)
    kept = {e.id for e in ver.accepted}
    reasons = Counter(r["reason"].split(":")[0] for r in res.rejected)
    print(f"{task.name} with {args.teacher}: {res.completions} completions, {len(res.accepted)} parsed "
          f"({dict(reasons)} rejected), {len(ver.accepted)} verified")
    blind, verdicts, _ = _paths(Path(args.task).stem, args.teacher)
    blind.parent.mkdir(parents=True, exist_ok=True)
    order = sorted(res.accepted, key=lambda e: random.Random(e.id).random())  # shuffled: no lineage order
    blind.write_text("".join(json.dumps({"id": e.id, "label": e.data.get("label"), "label_word":
                                         task.labels.get(str(e.data.get("label")), ""),
                                         "text": task.dedup_text(e)}) + "\n" for e in order))
    verdicts.write_text("".join(json.dumps({"id": e.id, "verified": e.id in kept}) + "\n" for e in order))
    print(f"to judge: {blind} (verdicts kept apart in {verdicts})")
    if res.rejected:  # what the parser or the arithmetic check threw away: judged too, so false rejects show
        rejected = [dict(r, id=f"rej-{r['seed_id']}-a{r['attempt']}s{r['sample']}") for r in res.rejected]
        rejected.sort(key=lambda r: random.Random(r["id"]).random())
        rblind, rreasons = (blind.with_name(blind.name.replace("-blind", "-rejected-blind")),
                            verdicts.with_name(verdicts.name.replace("-verdicts", "-rejected-reasons")))
        rblind.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rejected))
        rreasons.write_text("".join(json.dumps({"id": r["id"], "reason": r["reason"]}) + "\n" for r in rejected))
        print(f"rejected before verification, to judge too: {rblind} (reasons kept apart in {rreasons})")
    return 0


def precision_rows(judged_dir: Path = JUDGED) -> list[dict[str, Any]]:
    """One row per judged (task, teacher): counts before and after verification."""
    out = []
    for judged in sorted(judged_dir.glob("*-judged.jsonl")):
        stem = judged.name.removesuffix("-judged.jsonl")
        if stem.endswith("-rejected"):  # thrown away before verification: no verdicts to join
            continue
        if stem.endswith("-v3"):  # bench/verifier_arms.py's judgments: several verifiers, joined there
            continue
        task, teacher = stem.split("-", 1)
        rows = [json.loads(x) for x in judged.read_text().splitlines() if x.strip()]
        verdicts = {r["id"]: r["verified"] for r in map(json.loads, (judged_dir / f"{stem}-verdicts.jsonl")
                                                         .read_text().splitlines())}
        kept = [r for r in rows if verdicts[r["id"]]]
        out.append({"task": task, "teacher": teacher, "n": len(rows),
                    "correct": sum(r["judged_correct"] for r in rows), "kept": len(kept),
                    "kept_correct": sum(r["judged_correct"] for r in kept),
                    "refused_wrong": sum(not r["judged_correct"] for r in rows if not verdicts[r["id"]])})
    return out


def precision(_: argparse.Namespace) -> int:
    for r in precision_rows():
        print(f"{r['task']:6s} {r['teacher']:10s} before verification {r['correct']}/{r['n']}, "
              f"after {r['kept_correct']}/{r['kept']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--task", default="trec")
    c.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    c.add_argument("--n", type=int, default=25, help="seed examples to ask about")
    c.add_argument("--per-wrong", type=int, default=2)
    c.add_argument("--seed-size", type=int)
    c.add_argument("--cache", help="teacher cache (default: the user cache)")
    c.add_argument("--threads", type=int, help="llama.cpp threads (default: the card's)")
    c.add_argument("--data-dir")
    sub.add_parser("precision")
    args = ap.parse_args(argv)
    try:
        return collect(args) if args.cmd == "collect" else precision(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return UserError.exit_code


if __name__ == "__main__":
    sys.exit(main())
