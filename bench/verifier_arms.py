"""Teacher candidates judged blind, then run through several verifier settings (issue 23's SST-2 development).

    python bench/verifier_arms.py collect --task sst2 --data-seed 1 --n 50 --threads 1   # ~30 min, 1 thread
    python bench/verifier_arms.py report --task sst2                                       # the table

`collect` draws the task's seed set, picks --n seed examples as if the student had got them wrong, asks the
teacher for 2 new examples each with localaug's list prompt (the texts as the teacher wrote them), and runs
every parsed candidate through each arm:

    as-written   the text as written, the verifier choosing among the labels (v2's recipe)
    styled       the text rewritten in the seeds' style (match_style), the same verifier
    styled+refuse   the styled text, the verifier also allowed to answer "not an example" (refuse_non_examples)
    as-written+refuse

The generation is the same for every arm (the style is a rewrite of the teacher's text), so each candidate
is judged once. Files under bench/judged/ (<stem> = <task>-<teacher>-v3):

    <stem>-blind.jsonl      id, intended label, the text as written, shuffled: all the judge reads
    <stem>-key.jsonl        id, its seed example, the styled text, and each arm's verdict: not to be
                            opened before judging
    <stem>-judged.jsonl     the blind file with `judged_example` (is it an example of the task at all, not a
                            refusal or a note?) and `judged_correct` (does the text fit its label?) added by
                            the judge

`report` joins judged and key files: per arm, what the verifier kept and how much of it was right.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from localaug.augment import Target, augment
from localaug.backends import make_teacher
from localaug.config import RunConfig, resolve
from localaug.data import sample_seed
from localaug.errors import UserError
from localaug.style import TextStyle
from localaug.task import Example, load_task
from localaug.verify import verify_with_teacher

JUDGED = Path(__file__).resolve().parent / "judged"
SHORT = {"qwen2.5-coder-1.5b": "qwen1.5b", "gemma3-270m": "gemma270m"}
ARMS = {"as-written": (False, False), "styled": (True, False), "styled+refuse": (True, True),
        "as-written+refuse": (False, True)}  # name: (match_style, refuse_non_examples)


def stem(task: str, teacher: str) -> str:
    return f"{task}-{SHORT.get(teacher, Path(teacher).stem)}-v3"


def collect(args: argparse.Namespace) -> int:
    task = load_task(args.task, args.data_dir)
    settings = resolve(RunConfig(task=args.task, teacher=args.teacher, cache_path=args.cache,
                                 teacher_settings={"n_threads": args.threads} if args.threads else {}), task.defaults)
    teacher = make_teacher(settings)
    seed = sample_seed(task.load_split("train"), size=settings.seed_size, seed=args.data_seed,
                       stratify_by=task.stratify())
    rng = random.Random(args.data_seed)
    targets = [Target(e, None) for e in rng.sample(seed, min(args.n, len(seed)))]
    res = augment(task, teacher, targets, iteration=0, per_wrong=2, run_seed=args.data_seed, max_retries=0,
                  shots=4, pool=seed)
    style = TextStyle.learn(task.dedup_text(e) for e in seed)
    written = res.accepted
    styled = [Example(e.id, {**e.data, "text": style.apply(e.data["text"])}, e.meta) for e in written]
    verdicts: dict[str, dict[str, bool]] = {e.id: {} for e in written}
    for arm, (use_style, refuse) in ARMS.items():
        ver = verify_with_teacher(task, teacher, styled if use_style else written, seed, run_seed=args.data_seed,
                                  refuse=refuse)
        kept = {e.id for e in ver.accepted}
        for e in written:
            verdicts[e.id][arm] = e.id in kept
        print(f"{arm}: kept {len(kept)} of {len(written)}", flush=True)
    s = stem(Path(args.task).stem, args.teacher)
    JUDGED.mkdir(parents=True, exist_ok=True)
    order = sorted(written, key=lambda e: random.Random(e.id).random())  # shuffled: no lineage order
    (JUDGED / f"{s}-blind.jsonl").write_text("".join(json.dumps(
        {"id": e.id, "label": e.data["label"], "label_word": task.labels.get(str(e.data["label"]), ""),
         "text": e.data["text"]}) + "\n" for e in order))
    by_id = {e.id: e for e in styled}
    (JUDGED / f"{s}-key.jsonl").write_text("".join(json.dumps(
        {"id": e.id, "seed_id": e.meta["seed_id"], "styled": by_id[e.id].data["text"], "style": str(style),
         "verified": verdicts[e.id]}) + "\n" for e in order))
    print(f"{res.completions} completions, {len(written)} parsed; to judge: {JUDGED / f'{s}-blind.jsonl'}")
    return 0


def arm_rows(task: str, teacher: str = "qwen2.5-coder-1.5b", judged_dir: Path = JUDGED) -> list[dict[str, Any]]:
    """Per arm: candidates, kept, kept that are right, non-examples and wrong ones kept."""
    s = stem(task, teacher)
    judged = [json.loads(x) for x in (judged_dir / f"{s}-judged.jsonl").read_text().splitlines() if x.strip()]
    key = {r["id"]: r for r in map(json.loads, (judged_dir / f"{s}-key.jsonl").read_text().splitlines())}
    out = []
    for arm in ARMS:
        kept = [r for r in judged if key[r["id"]]["verified"][arm]]
        out.append({"arm": arm, "n": len(judged), "examples": sum(r["judged_example"] for r in judged),
                    "right": sum(r["judged_correct"] for r in judged), "kept": len(kept),
                    "kept_right": sum(r["judged_correct"] for r in kept),
                    "kept_non_examples": sum(not r["judged_example"] for r in kept),
                    "refused_right": sum(r["judged_correct"] for r in judged if not key[r["id"]]["verified"][arm])})
    return out


def report(args: argparse.Namespace) -> int:
    for r in arm_rows(Path(args.task).stem, args.teacher):
        print(f"{r['arm']:18s} kept {r['kept']}/{r['n']}, right {r['kept_right']}/{r['kept']}, "
              f"non-examples kept {r['kept_non_examples']}/{r['n'] - r['examples']}, right ones refused "
              f"{r['refused_right']}/{r['right']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--task", default="sst2")
    c.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    c.add_argument("--data-seed", type=int, default=1)
    c.add_argument("--n", type=int, default=50, help="seed examples to ask about (2 candidates each)")
    c.add_argument("--cache", default="bench/results/teacher-cache.sqlite")
    c.add_argument("--threads", type=int, help="llama.cpp threads (default: the card's)")
    c.add_argument("--data-dir")
    r = sub.add_parser("report")
    r.add_argument("--task", default="sst2")
    r.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    args = ap.parse_args(argv)
    try:
        return collect(args) if args.cmd == "collect" else report(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return UserError.exit_code


if __name__ == "__main__":
    sys.exit(main())
