"""A synthetic finished run directory, written through the store's API: as many teacher examples as asked,
every fate a real run records (kept; refused: parse, repeat, copy, verify, duplicate, contaminated), and
texts that try to break out of a page (report.html must show them as text). No model is loaded.

    write_run(path, teacher_examples=10_000)    # the report bench (bench/report_bench.py)
    write_run(path, teacher_examples=60)        # the browser test (tests/test_report_browser.py)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from localaug import layout
from localaug.config import RunConfig, resolve
from localaug.layout import round_folder
from localaug.records import (
    AugmentSummary,
    DedupSummary,
    EvalSummary,
    IterationRow,
    PrepareSummary,
    TrainSummary,
    VerifySummary,
)
from localaug.store import RunStore
from localaug.task import Example, load_task

# Texts a teacher might write that a careless page would run or fetch.
HOSTILE = ["</script><script>window.__pwned = 1</script>", '<img src="x" onerror="window.__pwned = 2">',
           "<b>bold?</b> & &amp; \"quoted\" 'single' <!-- comment -->", "see http://203.0.113.9/pixel.png now",
           "\u2028line separator\u2029 and ${template}"]
WORDS = ("my order the app invoice password card refund parcel account login screen address charge email "
         "printer desk lamp courier tracking update twice today again since monday please help").split()
# How a teacher example fares, in proportion: about what the 1.5B teacher's demo runs record.
FATES = ["kept"] * 4 + ["parse", "repeat", "copy", "verify", "verify", "duplicate", "contaminated"]
ROUNDS = 2  # rounds that ask the teacher; one more trains and evaluates only


def _text(rng: random.Random, k: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))) + f" #{k}"


def write_run(root: Path, teacher_examples: int, per_wrong: int = 3, seed: int = 0) -> Path:
    """A finished run with about `teacher_examples` teacher examples over ROUNDS rounds; its path."""
    rng = random.Random(seed)
    task = load_task("demo")
    labels = list(task.labels)
    targets_per_round = max(1, teacher_examples // (ROUNDS * per_wrong))
    settings = resolve(RunConfig(task="demo", seed_size=targets_per_round * 3, iterations=ROUNDS + 1,
                                 per_wrong=per_wrong, seed=seed), task.defaults)
    store = RunStore.open_for_run(root, settings)
    try:
        seed_set = [Example(f"train-{k}", {"text": _text(rng, k), "label": labels[k % len(labels)]},
                            {"origin": "seed"}) for k in range(targets_per_round * 3)]
        test = [Example(f"test-{k}", {"text": _text(rng, 10_000 + k), "label": labels[k % len(labels)]})
                for k in range(120)]
        store.write_examples(layout.SEED, seed_set)
        store.write_examples(layout.HOLDOUT, [])
        store.write_examples(layout.TEST, test)
        store.mark_done(layout.PREPARE, PrepareSummary(seed_size=len(seed_set), holdout_size=0,
                                                       test_size=len(test), pool_size=len(seed_set)))
        data, hostile = list(seed_set), iter(HOSTILE)  # the first teacher examples
        for i in range(ROUNDS + 1):
            here = round_folder(i)
            store.write_examples(here.train_data, data)
            store.mark_done(here.key(layout.TRAIN), TrainSummary(train_size=len(data), steps=1, train_tokens=1))
            seed_rows = _judged(rng, seed_set, labels, right=0.5)
            test_rows = _judged(rng, test, labels, right=0.4 + 0.05 * i)
            for split, rows in (("seed", seed_rows), ("test", test_rows)):
                store.write_jsonl(here.judged(split), rows)
                ok = sum(r["correct"] for r in rows)
                store.mark_done(here.key(layout.eval_stage(split)), EvalSummary(
                    accuracy=ok / len(rows), correct=ok, total=len(rows), wrong=len(rows) - ok, eval_mode="score"))
            row = IterationRow(iteration=i, train_size=len(data), seed_accuracy=_acc(seed_rows),
                               wrong=sum(not r["correct"] for r in seed_rows), test_accuracy=_acc(test_rows))
            if i < ROUNDS:
                wrong = [e for e, r in zip(seed_set, seed_rows, strict=True) if not r["correct"]][:targets_per_round]
                added = _teacher_round(store, rng, i, wrong, per_wrong, data, test, labels, hostile)
                row.new_examples = len(added)
                data = data + added
            store.record_iteration(row)
        store.finish(None, None)
    finally:
        store.unlock()
    return root


def _acc(rows: list[dict]) -> float:
    return sum(r["correct"] for r in rows) / len(rows)


def _judged(rng: random.Random, examples: list[Example], labels: list[str], right: float) -> list[dict]:
    rows = []
    for e in examples:
        ok = rng.random() < right
        pred = e.data["label"] if ok else rng.choice([x for x in labels if x != e.data["label"]])
        rows.append({"id": e.id, "prediction": pred, "gold": e.data["label"], "correct": ok, "output": pred})
    return rows


def _teacher_round(store: RunStore, rng: random.Random, i: int, wrong: list[Example], per_wrong: int,
                   data: list[Example], test: list[Example], labels: list[str], hostile: Iterator[str]
                   ) -> list[Example]:
    here = round_folder(i)
    candidates, parse_rej, verify_rej, dedup_rej, kept = [], [], [], [], []
    for t in wrong:
        for k in range(per_wrong):
            fate = rng.choice(FATES)
            text = next(hostile, None) or _text(rng, rng.randrange(10**6))
            if fate in ("parse", "repeat", "copy"):
                reason = {"parse": "parse: output does not follow the card's 'new' format",
                          "repeat": "repeat: the same text as an earlier sample for this seed example",
                          "copy": "copy: same text as the seed example"}[fate]
                parse_rej.append({"seed_id": t.id, "iteration": i, "attempt": 0, "sample": k, "reason": reason,
                                  "text": text, "finish_reason": "stop"})
                continue
            c = Example(f"aug{i:02d}-{t.id}-a0s{k}", {"text": text, "label": t.data["label"]},
                        {"origin": "teacher", "seed_id": t.id, "iteration": i, "attempt": 0, "sample": k})
            candidates.append(c)
            if fate == "verify":
                other = rng.choice([x for x in labels if x != t.data["label"]])
                verify_rej.append({"seed_id": t.id, "iteration": i, "id": c.id, "example": c.to_json(),
                                   "reason": f"verify: teacher answered '{other}', not '{t.data['label']}'"})
            elif fate in ("duplicate", "contaminated"):
                near = rng.choice(data if fate == "duplicate" else test)
                dedup_rej.append({"seed_id": t.id, "iteration": i, "id": c.id, "reason": f"{fate}: of {near.id}",
                                  "similarity": round(rng.uniform(0.7, 1.0), 4), "example": c.to_json()})
            else:
                kept.append(c)
    verified = [c for c in candidates if c.id not in {r["id"] for r in verify_rej}]
    store.write_examples(here.candidates, candidates)
    store.write_jsonl(here.rejected_by("parse"), parse_rej)
    store.mark_done(here.key(layout.AUGMENT), AugmentSummary(
        wrong=len(wrong), requested=len(wrong) * per_wrong, completions=len(candidates) + len(parse_rej),
        parsed=len(candidates), parse_rejected=len(parse_rej), parse_failure_rate=0.0, repeats=0, repeat_rate=0.0,
        cached=0, completion_tokens=0, teacher="synthetic"))
    store.write_examples(here.verified, verified)
    store.write_jsonl(here.rejected_by("verify"), verify_rej)
    store.mark_done(here.key(layout.VERIFY), VerifySummary(candidates=len(candidates), verified=len(verified),
                                                           verifier="synthetic"))
    store.write_examples(here.added, kept)
    store.write_jsonl(here.rejected, store.rejections(here) + dedup_rej)
    store.mark_done(here.key(layout.DEDUP), DedupSummary(
        candidates=len(verified), accepted=len(kept),
        duplicate=sum(r["reason"].startswith("duplicate") for r in dedup_rej),
        contaminated=sum(r["reason"].startswith("contaminated") for r in dedup_rej),
        next_train_size=len(data) + len(kept)))
    return kept
