"""The student on 1 process x 2 threads vs 2 processes x 1 thread, side by side in one run: the same training stage
and the same scoring (bench/README.md, "Student: several processes").

    .venv/bin/python bench/student_processes.py                  # 64 TREC rows x 2 epochs, 500 test rows
    .venv/bin/python bench/student_processes.py --rounds 2       # each side twice (A B B A), medians
    .venv/bin/python bench/student_processes.py --quick          # smoke: 16 rows x 1 epoch, 32 test rows

Training: the default student (Gemma 3 270M) on TREC rows, an effective batch of 8 (1 x 8 vs 2 x 4: the same
steps), through `HFStudent.train` as a run calls it. The one-process side has its model loaded already (a run keeps
it between stages); the two-process stage pays for torchrun, two imports and two model loads, reported as its
launch overhead (the stage's wall time minus the workers' training time).

Scoring: the one-process side's adapter scores the test rows in the driver (1 process, 2 threads), then sharded over
2 torchrun processes (1 thread each, a contiguous half each, merged by the driver; launch and loads included). The
merged predictions must equal the driver's: the bench exits 1 when they do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench module, run as a script or by torchrun
from student_bench import LABELS, PROMPT, _rows, _train_items  # noqa: E402


def _eval_items(n: int) -> list[Any]:
    from localaug.protocols import EvalItem

    return [EvalItem(PROMPT.format(r["text"]), choices=tuple(LABELS.values())) for r in _rows("test.jsonl")[:n]]


def side(mode: str, rows: int, epochs: int, test_rows: int, work: Path) -> dict[str, Any]:
    """One side in its own process: train a stage, then score (one: in this process; two: sharded)."""
    import torch

    from localaug.student import load_student

    two = mode == "two"
    if two:
        os.environ["OMP_NUM_THREADS"] = "1"  # each worker: one thread
    else:
        torch.set_num_threads(2)
    st = load_student(epochs=epochs, batch_size=4 if two else 8, **({"processes": 2} if two else {}))
    items = _train_items(_rows("train.jsonl")[:rows], [0] * rows)
    if not two:
        st.base_model()  # a run has it loaded already when a stage starts
    adapter = work / f"{mode}-adapter" / "adapter"
    t = time.perf_counter()
    stats = st.train(items, adapter, seed=0)
    out: dict[str, Any] = {"mode": mode, "train_wall_s": round(time.perf_counter() - t, 2),
                           "train_s": stats.seconds, "steps": stats.steps, "processes": stats.processes,
                           "launch_s": stats.extra.get("launch_seconds", 0.0), "final_loss": stats.final_loss}
    scored = work / "one-adapter" / "adapter"  # both sides score the same adapter
    t = time.perf_counter()
    if two:
        outputs, scores = _score_sharded(scored, test_rows, work)
    else:
        res = st.evaluate(scored, _eval_items(test_rows))
        outputs, scores = [r.output for r in res], [r.scores for r in res]
        (work / "driver-predictions.json").write_text(json.dumps({"outputs": outputs, "scores": scores}))
    out["score_wall_s"] = round(time.perf_counter() - t, 2)
    out["test_rows"] = len(outputs)
    if two:
        ref = json.loads((work / "driver-predictions.json").read_text())
        out["same_predictions"] = sum(a == b for a, b in zip(outputs, ref["outputs"], strict=True))
        out["max_score_diff"] = max(abs(x - y) for a, b in zip(scores, ref["scores"], strict=True)
                                    for x, y in zip(a, b, strict=True))
    return out


def _score_sharded(adapter: Path, test_rows: int, work: Path) -> tuple[list[str], list[list[float]]]:
    shards = work / "shards"
    shards.mkdir(exist_ok=True)
    for p in shards.glob("*.json"):
        p.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    __file__, "shard", "--adapter", str(adapter), "--test-rows", str(test_rows), "--work", str(shards)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    parts = sorted((json.loads(p.read_text()) for p in shards.glob("rank*.json")), key=lambda r: r["lo"])
    return [o for p in parts for o in p["outputs"]], [s for p in parts for s in p["scores"]]


def shard(adapter: Path, test_rows: int, work: Path) -> None:
    """A torchrun worker: score a contiguous share of the test rows (no collectives: shards are independent)."""
    from localaug.student import load_student

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    items = _eval_items(test_rows)
    lo, hi = rank * len(items) // world, (rank + 1) * len(items) // world
    res = load_student().evaluate(adapter, items[lo:hi])
    (work / f"rank{rank}.json").write_text(json.dumps(
        {"lo": lo, "outputs": [r.output for r in res], "scores": [r.scores for r in res]}))


def _sub(mode: str, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "side", "--mode", mode, "--rows", str(a.rows), "--epochs", str(a.epochs),
           "--test-rows", str(a.test_rows), "--work", str(work)]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(f"{mode}: {res}", file=sys.stderr, flush=True)
    return res


def run_all(a: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="localaug-processes-"))
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    for r in range(a.rounds):  # A B, then B A: a drift in the machine's load hits both sides alike
        for mode in ("one", "two") if r % 2 == 0 else ("two", "one"):
            runs[mode].append(_sub(mode, a, work))

    def med(mode: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[mode]), 2)

    one, two = runs["one"][0], runs["two"][0]
    print(f"\n{a.rows} TREC rows x {a.epochs} epochs ({one['steps']} steps of 8 rows), {one['test_rows']} test rows "
          f"scored; medians of {len(runs['one'])} round(s)\n")
    print("| | 1 process x 2 threads | 2 processes x 1 thread | ratio (2p / 1p) |\n|---|---|---|---|")
    for key, what in (("train_wall_s", "training stage, wall s"), ("train_s", "of which training, s"),
                      ("score_wall_s", "scoring stage, wall s")):
        x1, x2 = med("one", key), med("two", key)
        print(f"| {what} | {x1} | {x2} | {x2 / max(x1, 1e-9):.2f} |")
    print(f"| launch overhead per training stage | - | {med('two', 'launch_s')} s | |")
    same = all(r["same_predictions"] == r["test_rows"] for r in runs["two"])
    print(f"\nsharded scoring: {two['same_predictions']} of {two['test_rows']} predictions equal the driver's, "
          f"max score difference {two['max_score_diff']:.2g}")
    return 0 if same else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", nargs="?", default="all", choices=["all", "side", "shard"])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--test-rows", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke sizes: 16 rows, 1 epoch, 32 test rows")
    ap.add_argument("--mode", choices=["one", "two"])
    ap.add_argument("--adapter", type=Path)
    ap.add_argument("--work", type=Path)
    a = ap.parse_args()
    if a.quick:
        a.rows, a.epochs, a.test_rows = 16, 1, 32
    if a.part == "side":
        print(json.dumps(side(a.mode, a.rows, a.epochs, a.test_rows, a.work)))
        return 0
    if a.part == "shard":
        shard(a.adapter, a.test_rows, a.work)
        return 0
    return run_all(a)


if __name__ == "__main__":
    sys.exit(main())
