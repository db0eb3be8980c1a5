"""Teacher throughput, measured side by side in one run (see bench/README.md, section "Teacher").

    .venv/bin/python bench/teacher_bench.py [--card gemma3-270m] [--prompts 16] [--max-tokens 64] [--threads N]
                                            [--no-http]

Compares, on the same prompts, model and sampling settings:
  raw       llama_cpp.Llama.create_completion, one prompt after another (the reference)
  seq       localaug's sequential path (LlamaCppTeacher, batched=False)
  batch8/16 localaug's batched path, 8 / 16 sequences per llama_decode
  cached    CachedTeacher(batch8) on an empty cache (pipeline overhead), then the same call again
  http      the server teacher (8 concurrent requests) against `python -m llama_cpp.server` on 127.0.0.1
  verify    the verifier on 16 demo candidates in one call (shared few-shot prefix, constrained labels):
            seconds per candidate, and the shared prefix's length
and prints aggregate generated tokens/s and the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from localaug.protocols import GenerationRequest, Sampling
from localaug.teacher import build_teacher
from localaug.teacher.cache import CachedTeacher, GenerationCache
from localaug.teacher.llamacpp import MIN_P, TOP_K, TYPICAL_P, LlamaCppTeacher

QUESTIONS = [
    "How far is it from Denver to Aspen?", "What county is Modesto, California in?",
    "Who was Galileo?", "What is an atom?", "When did Hawaii become a state?",
    "How tall is the Sears Building?", "George Bush purchased a small interest in which baseball team?",
    "What is Australia's national flower?", "Why does the moon turn orange?", "What is autism?",
    "What city had a world fair in 1900?", "What person's head is on a dime?",
    "What is the average weight of a Yellow Labrador?", "Who was the first man to fly across the Pacific?",
    "What are the spots on dominoes called?", "How many hearts does an octopus have?",
    "What is the melting point of copper?", "Who invented the paper clip?",
]


def prompt_for(i: int) -> str:
    # A few-shot completion prompt of the kind augment.py renders for the base model (~90 tokens).
    q = QUESTIONS[i % len(QUESTIONS)]
    return (
        "Write a new question of the same kind as the example.\n\n"
        "Example: What is the capital of Peru?\nNew question: What is the largest city in Chile?\n\n"
        "Example: Who wrote Hamlet?\nNew question: Who painted the Mona Lisa?\n\n"
        f"Example: {q}\nNew question:"
    )


def tokens(results: list[list]) -> int:
    return sum(c.completion_tokens for r in results for c in r)


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def verify_cost(teacher: LlamaCppTeacher) -> tuple[float, int]:
    """Seconds per candidate for the verifier on 16 demo candidates (the built-in task: no data needed)."""
    from localaug.task import Example, load_task
    from localaug.verify import label_with_teacher, shared_shots

    task = load_task("demo")
    pool = task.load_split("train")
    cands = [Example(f"c{i}", e.data) for i, e in enumerate(task.load_split("test")[:16])]
    shots = shared_shots(task, pool, set(), 4, 0)
    _, secs = timed(lambda: label_with_teacher(task, teacher, cands, shots))
    return secs / len(cands), teacher.last_shared_prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--card", default="gemma3-270m", help="the teacher's model card")
    args = ap.parse_args()

    import llama_cpp

    from localaug.modelcards import load_model_card

    gguf = load_model_card(args.card).gguf_file()
    # Sampling as a teacher uses it; no stop string, so every path generates max_tokens per prompt
    # unless the model ends the text (EOS) -- rates count the tokens actually generated.
    s = Sampling(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, seed=0)
    reqs = [GenerationRequest(sampling=s, prompt=prompt_for(i)) for i in range(args.prompts)]
    rows: dict[str, tuple[int, float]] = {}

    def record(name: str, n_tok: int, secs: float) -> None:
        rows[name] = (n_tok, secs)
        print(f"{name:>8}: {n_tok:5d} tokens in {secs:6.2f} s = {n_tok / secs:7.1f} tok/s", flush=True)

    print(f"{args.card}, {args.prompts} prompts x {args.max_tokens} max tokens, "
          f"temperature {s.temperature}, threads {args.threads}, cpu_count {os.cpu_count()}")

    raw = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    raw.create_completion(prompt_for(0), max_tokens=4)  # warm-up, as every path gets one

    def run_raw() -> int:
        n = 0
        for r in reqs:
            out = raw.create_completion(r.prompt or "", max_tokens=s.max_tokens, temperature=s.temperature,
                                        top_p=s.top_p, top_k=TOP_K, min_p=MIN_P, typical_p=TYPICAL_P,
                                        repeat_penalty=1.0, seed=s.seed)
            n += out["usage"]["completion_tokens"]  # type: ignore[index]
        return n

    teachers = {b: LlamaCppTeacher(gguf, batch_sequences=b, n_threads=args.threads) for b in (8, 16)}
    warm = [GenerationRequest(sampling=Sampling(max_tokens=4), prompt="Hello")]
    for t in teachers.values():
        t.generate(warm)  # creates the multi-sequence context outside the timing
    t8 = teachers[8]
    paths = {
        "raw": run_raw,
        "seq": lambda: tokens([[c] for _, _, c in t8.generate_stream(reqs, batched=False)]),
        "batch8": lambda: tokens(t8.generate(reqs)),
        "batch16": lambda: tokens(teachers[16].generate(reqs)),
    }
    # Interleaved repeats, median per path: the machine is shared, so one pass is noise-prone.
    samples: dict[str, list[tuple[int, float]]] = {k: [] for k in paths}
    for rep in range(args.repeats):
        for name, fn in paths.items():
            n, secs = timed(fn)
            samples[name].append((n, secs))
            print(f"  [{rep + 1}/{args.repeats}] {name:>8}: {n / secs:7.1f} tok/s", flush=True)
    for name, runs in samples.items():
        n, secs = sorted(runs, key=lambda r: r[0] / r[1])[len(runs) // 2]
        record(name, n, secs)
    raw.close()

    with tempfile.TemporaryDirectory() as d:
        ct = CachedTeacher(t8, GenerationCache(Path(d) / "bench.sqlite"))
        out, secs = timed(lambda: ct.generate(reqs))
        record("cached", tokens(out), secs)
        calls_before = ct.model_calls
        out2, secs2 = timed(lambda: ct.generate(reqs))
        rerun_calls = ct.model_calls - calls_before
        print(f"   rerun: {secs2 * 1000:.2f} ms, {rerun_calls} model calls, {ct.cache_hits} cache hits")
    teachers[16].close()

    # Greedy agreement: how often the batched path reproduces the sequential path's greedy text
    # (llama.cpp logits are not bit-identical across batch layouts; near-ties can flip).
    g = Sampling(temperature=0.0, max_tokens=min(32, args.max_tokens))
    greqs = [GenerationRequest(sampling=g, prompt=prompt_for(i)) for i in range(args.prompts)]
    gb = [r[0].text for r in t8.generate(greqs)]
    gs = [c.text for _, _, c in sorted(t8.generate_stream(greqs, batched=False), key=lambda x: x[0])]
    agree = sum(a == b for a, b in zip(gb, gs, strict=True))
    print(f"   greedy agreement batch8 vs seq: {agree}/{len(gb)} identical ({g.max_tokens} tokens)")

    verify_s, shared = verify_cost(t8)
    print(f"  verify: {verify_s:.2f} s per candidate (16 in one call, {shared} prompt tokens shared)")

    http_rate = None
    if not args.no_http:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(args.threads),
             "--n_threads_batch", str(args.threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/v1"
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/models", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            ht = build_teacher(url=url, model=str(gguf), chat_template=False, concurrency=8)
            ht.generate(warm)
            out, secs = timed(lambda: ht.generate(reqs))
            record("http", tokens(out), secs)
            http_rate = rows["http"][0] / rows["http"][1]
        finally:
            proc.kill()
            proc.wait(30)

    rate = {k: n / s_ for k, (n, s_) in rows.items()}
    ratios = {
        "batch8 / seq": rate["batch8"] / rate["seq"],
        "batch16 / seq": rate["batch16"] / rate["seq"],
        "batch8 / raw": rate["batch8"] / rate["raw"],
        "seq / raw": rate["seq"] / rate["raw"],
        "cached miss (batch8) / raw": rate["cached"] / rate["raw"],
        "cache rerun speed-up": rows["cached"][1] / max(secs2, 1e-9),
    }
    if http_rate is not None:
        ratios["http / batch8 in process"] = http_rate / rate["batch8"]
        ratios["http / raw"] = http_rate / rate["raw"]
    print("ratios:")
    for k, v in ratios.items():
        print(f"  {k:>28}: {v:8.2f}x")
    print(f"  cache rerun model calls: {rerun_calls}")
    print(f"  greedy agreement batch8 vs seq: {agree}/{len(gb)}")
    print(f"  verifier: {verify_s:.2f} s per candidate")
    if args.json:
        args.json.write_text(json.dumps({"tok_per_s": rate, "ratios": ratios, "rerun_model_calls": rerun_calls,
                                         "greedy_agreement": [agree, len(gb)], "verify_s_per_candidate": verify_s,
                                         "threads": args.threads, "prompts": args.prompts,
                                         "max_tokens": args.max_tokens}, indent=2))


if __name__ == "__main__":
    main()
