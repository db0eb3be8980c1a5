"""Student benchmarks: every ratio is measured side by side in one invocation, each part in its own process
(so that peak RSS belongs to that part alone).

    .venv/bin/python bench/student_bench.py all            # everything, prints a markdown table
    .venv/bin/python bench/student_bench.py step --mode ours --precision bf16   # one part

Parts:
  step      one training step, batch 8 x ~128 tokens: answer-only logits (ours) vs model(labels=...)
  trainer   training tokens/s: our Trainer (answer-only loss, length grouping) vs a plain Trainer + peft
            baseline (model(labels=...), random batches), on mixed-length TREC rows
  eval      TREC test: likelihood scoring vs generate-and-parse, with an adapter tuned on 50 rows
  iteration peak RSS and wall time of one LLM2LLM iteration: train 50 rows + eval seed 50 + eval test
Data: $LOCALAUG_DATA_DIR/trec (default: ../shared/data next to the repo, as the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LABELS = {"ABBR": " abbreviation", "DESC": " description", "ENTY": " entity", "HUM": " human",
          "LOC": " location", "NUM": " number"}
PROMPT = "Question: {}\nAnswer type:"


def _rows(name: str) -> list[dict[str, Any]]:
    d = Path(os.environ.get("LOCALAUG_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "trec"
    with open(d / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _few_shot(rows: list[dict[str, Any]], i: int, shots: int) -> str:
    demo = "".join(PROMPT.format(rows[j]["text"]) + LABELS[rows[j]["label"]] + "\n\n"
                   for j in range(i + 1, i + 1 + shots))
    return demo + PROMPT.format(rows[i]["text"])


def _train_items(rows: list[dict[str, Any]], shots: list[int]) -> list[Any]:
    from localaug.protocols import TrainItem

    return [TrainItem(_few_shot(rows, i, s), LABELS[rows[i]["label"]]) for i, s in enumerate(shots)]


# --------------------------------------------------------------------------- parts


def part_step(mode: str, precision: str, steps: int) -> dict[str, Any]:
    """Training step peak memory (and time): answer-only logits vs the standard full-logits loss."""
    import torch

    from localaug.student import load_student
    from localaug.student.train import collate, encode_item, prepare_peft

    st = load_student(precision=precision)
    rows = _rows("train.jsonl")
    items = _train_items(rows, [5] * 8)  # 5-shot prompts: ~128 tokens per row, 1-2 answer tokens
    batch = collate([encode_item(st.tokenizer, it, 256) for it in items], st.tokenizer.pad_token_id)
    model = prepare_peft(st.base_model(), st.plan, seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rss0 = _rss_mb()
    times = []
    for k in range(steps + 1):  # the first step warms up allocators and is not timed
        t = time.perf_counter()
        _backward(model, batch, mode)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k:
            times.append(time.perf_counter() - t)
    return {"mode": mode, "precision": precision, "s_per_step": round(sum(times) / len(times), 2),
            "peak_rss_mb": round(_peak_mb()), "step_peak_extra_mb": round(_peak_mb() - rss0),
            "batch": list(batch["input_ids"].shape)}


def _backward(model: Any, batch: dict[str, Any], mode: str) -> None:
    """One forward + backward with our answer-only loss ("ours") or the standard `labels=` loss."""
    from localaug.student.train import answer_only_loss

    if mode == "ours":
        loss = answer_only_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    else:
        loss = model(**batch).loss
    loss.backward()


def part_pair(precision: str, rounds: int) -> dict[str, Any]:
    """Step time of both losses alternated in one process (A B A B ...), so that the background load of a
    shared machine hits both alike; `part_step` (one process per mode) gives the memory figures."""

    from localaug.student import load_student
    from localaug.student.train import collate, encode_item, prepare_peft

    st = load_student(precision=precision)
    items = _train_items(_rows("train.jsonl"), [5] * 8)
    batch = collate([encode_item(st.tokenizer, it, 256) for it in items], st.tokenizer.pad_token_id)
    model = prepare_peft(st.base_model(), st.plan, seed=0)
    times: dict[str, list[float]] = {"ours": [], "labels": []}
    for k in range(rounds + 1):
        for mode in ("ours", "labels"):
            t = time.perf_counter()
            _backward(model, batch, mode)
            model.zero_grad(set_to_none=True)
            if k:  # round 0 warms up
                times[mode].append(time.perf_counter() - t)
    return {"precision": precision, **{m: round(sorted(v)[len(v) // 2], 2) for m, v in times.items()},
            "rounds": rounds}


def part_trainer(mode: str, n: int, epochs: int) -> dict[str, Any]:
    """Tokens/s of a whole Trainer run on mixed-length rows (0-6 few-shot demos each)."""
    from localaug.student import load_student
    from localaug.student.train import encode_item, train_adapter

    st = load_student(epochs=epochs)
    rng = random.Random(0)
    items = _train_items(_rows("train.jsonl"), [rng.choice([0, 0, 1, 2, 4, 6]) for _ in range(n)])
    tokens = sum(len(encode_item(st.tokenizer, it, 256)["input_ids"]) for it in items) * epochs
    out = Path(tempfile.mkdtemp()) / "adapter"
    st.base_model()  # loading is not part of the measure
    t = time.perf_counter()
    if mode == "baseline":
        _plain_trainer(st, items, epochs)
    else:
        train_adapter(st.base_model(), st.tokenizer, items, out, 0, st.plan, group_by_length=mode == "ours")
    dt = time.perf_counter() - t
    return {"mode": mode, "seconds": round(dt, 1), "tokens": tokens, "tokens_per_s": round(tokens / dt, 1),
            "peak_rss_mb": round(_peak_mb())}


def _plain_trainer(st: Any, items: list[Any], epochs: int) -> None:
    """The baseline a user would write: Trainer + peft, model(labels=...), random batches."""
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from localaug.student.train import _lora_config, collate, encode_item

    tc = st.plan.train
    data = [encode_item(st.tokenizer, it, 256) for it in items]
    model = get_peft_model(st.base_model(), _lora_config(st.plan))
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=tc.batch_size,
                                 num_train_epochs=epochs, learning_rate=tc.lr, save_strategy="no",
                                 report_to="none", use_cpu=True, remove_unused_columns=False,
                                 disable_tqdm=True, seed=0, logging_steps=1000)
        Trainer(model=model, args=args, train_dataset=data,
                data_collator=lambda b: collate(b, st.tokenizer.pad_token_id)).train()


def part_eval(n_test: int, gen_rows: int) -> dict[str, Any]:
    """Scoring vs generate-and-parse on TREC test with an adapter tuned on 50 training rows."""
    from localaug.protocols import EvalItem
    from localaug.student import load_student

    st = load_student()
    train = _rows("train.jsonl")[:50]
    test = _rows("test.jsonl")[:n_test]
    ad = Path(tempfile.mkdtemp()) / "adapter"
    st.train(_train_items(train, [0] * len(train)), ad, seed=0)
    out: dict[str, Any] = {}
    for name, adapter in (("base", None), ("tuned", ad)):
        t = time.perf_counter()
        res = st.evaluate(adapter, [EvalItem(PROMPT.format(r["text"]), choices=tuple(LABELS.values()))
                                    for r in test])
        dt = time.perf_counter() - t
        acc = sum(r.output == LABELS[x["label"]] for r, x in zip(res, test, strict=True)) / len(test)
        sub = test[:gen_rows]
        acc_sub = sum(r.output == LABELS[x["label"]] for r, x in zip(res, sub, strict=False)) / len(sub)
        out[f"score_{name}"] = {"rows": len(test), "seconds": round(dt, 1), "s_per_row": round(dt / len(test), 4),
                                "accuracy": round(acc, 3), f"accuracy_first_{len(sub)}": round(acc_sub, 3)}
        t = time.perf_counter()
        res = st.evaluate(adapter, [EvalItem(PROMPT.format(r["text"]), max_new_tokens=4, stop=("\n",))
                                    for r in sub])
        dt = time.perf_counter() - t
        parsed = [r.output.strip().lower().split(" ")[0] if r.output.strip() else "" for r in res]
        acc = sum(p == LABELS[x["label"]].strip() for p, x in zip(parsed, sub, strict=True)) / len(sub)
        out[f"generate_{name}"] = {"rows": len(sub), "seconds": round(dt, 1), "s_per_row": round(dt / len(sub), 4),
                                   "accuracy": round(acc, 3)}
    return out


def part_iteration(n_test: int) -> dict[str, Any]:
    """One LLM2LLM iteration of the default student: train on 50 rows, evaluate seed (50) and test."""
    from localaug.protocols import EvalItem
    from localaug.student import load_student

    t0 = time.perf_counter()
    st = load_student()
    st.base_model()
    load_s = time.perf_counter() - t0
    seed = _rows("train.jsonl")[:50]
    test = _rows("test.jsonl")[:n_test]
    ad = Path(tempfile.mkdtemp()) / "adapter"
    t = time.perf_counter()
    stats = st.train(_train_items(seed, [0] * len(seed)), ad, seed=0)
    train_s = time.perf_counter() - t
    train_peak = _peak_mb()
    t = time.perf_counter()
    for rows in (seed, test):
        st.evaluate(ad, [EvalItem(PROMPT.format(r["text"]), choices=tuple(LABELS.values())) for r in rows])
    eval_s = time.perf_counter() - t
    return {"load_s": round(load_s, 1), "train_s": round(train_s, 1), "eval_seed_and_test_s": round(eval_s, 1),
            "test_rows": len(test), "steps": stats.steps, "train_tokens_per_s": stats.extra["tokens_per_s"],
            "peak_rss_after_train_mb": round(train_peak), "peak_rss_mb": round(_peak_mb()),
            "precision": st.plan.precision}


# --------------------------------------------------------------------------- driver


def _sub(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *args, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"{' '.join(args)}: {res}", file=sys.stderr, flush=True)
    return res


def run_all(quick: bool) -> None:
    steps = 2 if quick else 3
    step = {(m, p): _sub("step", "--mode", m, "--precision", p, "--steps", "1")
            for p in ("fp32", "bf16") for m in ("labels", "ours")}
    pair = {p: _sub("pair", "--precision", p, "--steps", str(steps)) for p in ("fp32", "bf16")}
    n = 32 if quick else 64
    tr = {m: _sub("trainer", "--mode", m, "--n", str(n)) for m in ("baseline", "ungrouped", "ours")}
    ev = _sub("eval", "--n-test", "100" if quick else "500", "--gen-rows", "50" if quick else "100")
    it = _sub("iteration", "--n-test", "100" if quick else "500")
    std, ours = step[("labels", "fp32")], step[("ours", "bf16")]
    print("\n| measure | result |\n|---|---|")
    for (m, p), r in step.items():
        print(f"| step {m} {p} ({r['batch'][0]}x{r['batch'][1]}) | {r['s_per_step']} s/step, "
              f"peak RSS {r['peak_rss_mb']} MB (+{r['step_peak_extra_mb']} MB in the step) |")
    for p, r in pair.items():
        print(f"| step time, alternated in one process, {p} (median of {r['rounds']}) | ours {r['ours']} s, "
              f"labels {r['labels']} s: {r['labels'] / r['ours']:.2f}x |")
    print(f"| ours bf16 vs labels fp32 | time {pair['fp32']['labels'] / pair['bf16']['ours']:.2f}x faster, "
          f"step memory {ours['step_peak_extra_mb'] / max(std['step_peak_extra_mb'], 1):.2f}x |")
    for m, r in tr.items():
        print(f"| trainer {m} ({n} mixed rows) | {r['tokens_per_s']} tokens/s ({r['seconds']} s) |")
    print(f"| trainer ours / baseline | {tr['ours']['tokens_per_s'] / tr['baseline']['tokens_per_s']:.2f}x "
          f"(ungrouped / baseline {tr['ungrouped']['tokens_per_s'] / tr['baseline']['tokens_per_s']:.2f}x) |")
    for k, r in ev.items():
        sub = "".join(f", {a.replace('_', ' ')} {v}" for a, v in r.items() if a.startswith("accuracy_first"))
        print(f"| eval {k} | {r['rows']} rows, {r['s_per_row']} s/row, accuracy {r['accuracy']}{sub} |")
    print(f"| scoring speed-up vs generate (tuned) | "
          f"{ev['generate_tuned']['s_per_row'] / ev['score_tuned']['s_per_row']:.1f}x |")
    print(f"| one iteration (50 train, 50 seed + {it['test_rows']} test scored) | load {it['load_s']} s, "
          f"train {it['train_s']} s, eval {it['eval_seed_and_test_s']} s; peak RSS {it['peak_rss_mb']} MB "
          f"({it['precision']}) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["all", "step", "pair", "trainer", "eval", "iteration"])
    ap.add_argument("--mode", default="ours")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--gen-rows", type=int, default=100)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.part == "all":
        run_all(a.quick)
        return
    res = {"step": lambda: part_step(a.mode, a.precision, a.steps),
           "pair": lambda: part_pair(a.precision, a.steps),
           "trainer": lambda: part_trainer(a.mode, a.n, 1),
           "eval": lambda: part_eval(a.n_test, a.gen_rows),
           "iteration": lambda: part_iteration(a.n_test)}[a.part]()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
