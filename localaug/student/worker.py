"""One torchrun worker of a training stage: `python -m localaug.student.worker <job.json>`.

Started by distributed.py through torchrun (or the card's launcher), one per rank; not meant to be run by
hand except to replay a failed job. Each worker joins the process group (gloo on CPU, NCCL on CUDA), loads
the base model (CUDA: on its own GPU, or for FSDP), and runs the same `train_adapter` as one process, where the
Trainer wraps the model in DDP or FSDP and shards the batches. It writes its output to `rank<R>.log`, a line
per step to `rank<R>.progress.jsonl` and, if it fails, its exception to `rank<R>.error` (all next to the job
file); rank 0 writes the adapter and `result.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .distributed import die_with_parent


def _redirect_output(log: Path) -> None:
    """This worker's stdout and stderr (Python's and the C libraries') go to its own log file."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class _ProgressFile:
    """A line per optimizer step, flushed at once: the driver tails it for its progress bar."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(json.dumps(row) + "\n")

    def step(self, done: int, total: int, info: dict[str, Any]) -> None:
        self.write({"step": done, "total": total, "loss": info.get("loss"),
                    "tokens_per_s": info.get("tokens_per_s", 0.0), "time": time.time()})


def _train(job: dict[str, Any], rank: int, local_rank: int, report: _ProgressFile) -> Any:
    import torch
    import torch.distributed as dist

    from ..failpoints import crash, failpoint
    from ..protocols import TrainItem
    from .hf import load_base_model, load_tokenizer
    from .plan import StudentPlan
    from .quiet import quiet_transformers
    from .train import fsdp_environment, train_adapter

    plan = StudentPlan.from_dict(job["plan"])
    if plan.device == "cuda":
        torch.cuda.set_device(local_rank)
    if plan.fsdp:
        os.environ.update(fsdp_environment(plan))
    # The process group first: transformers asks whether it runs distributed when it loads an FSDP model.
    dist.init_process_group(backend="nccl" if plan.device == "cuda" else "gloo")
    quiet_transformers()
    tok = load_tokenizer(Path(job["model_dir"]))
    model = load_base_model(Path(job["model_dir"]), plan, for_training=True)
    crash(f"worker:rank{rank}")  # the failing-worker test: an exception in one rank
    failpoint(f"worker:rank{rank}:kill")  # ... or a rank killed without a word (the OOM killer)
    items = [TrainItem(p, c) for p, c in job["items"]]
    return train_adapter(model, tok, items, Path(job["out_dir"]), job["seed"], plan, report.step, distributed=True)


def main(argv: list[str]) -> int:
    die_with_parent()  # before anything slow: a worker whose launcher is gone must not train on
    job_path = Path(argv[0])
    folder = job_path.parent
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    _redirect_output(folder / f"rank{rank}.log")
    report = _ProgressFile(folder / f"rank{rank}.progress.jsonl")
    report.write({"event": "start", "pid": os.getpid(), "rank": rank, "world_size": os.environ.get("WORLD_SIZE")})
    try:
        stats = _train(json.loads(job_path.read_text()), rank, local_rank, report)
    except BaseException as e:
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:300]
        (folder / f"rank{rank}.error").write_text(json.dumps(
            {"rank": rank, "time": time.time(), "error": f"{type(e).__name__}: {first}".rstrip(": ")}))
        return 1
    if rank == 0:
        from ..files import atomic_write_text

        atomic_write_text(folder / "result.json", json.dumps(stats.__dict__))
    import torch.distributed as dist

    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
