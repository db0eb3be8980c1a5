"""GPU check of the QLoRA student: a Llama-2-7B *shape* with RANDOM weights, through localaug's own student code.

No 7B weights can be had offline, but memory and speed do not depend on the weights' values. This script writes a
checkpoint of the requested shape filled with random numbers, loads it with the `llama2-7b-qlora` model card (only
the weights source is overridden: 4-bit NF4, double quantisation, bf16 compute, LoRA on all linear layers, the
card's batch, gradient accumulation and max length), trains LoRA for a few steps, then scores and generates with
the adapter. It prints peak GPU memory, step time, tokens/s and the versions, and says that the weights are random.

    python3 bench/gpu_check.py --shape llama2-7b --json gpu_check.json     # on a CUDA GPU (bench/README.md)
    python3 bench/gpu_check.py --shape tiny --device cpu --json out.json   # CPU, bitsandbytes' CPU 4-bit path
    python3 bench/gpu_check.py --processes 4 --json gpu_check.json         # 4 GPUs: DDP, one torchrun worker each
    python3 bench/gpu_check.py --processes 4 --fsdp --json gpu_check.json  # 4 GPUs: FSDP + QLoRA

Exit status 1 when a check fails (the model was not really 4-bit, a step was not at the card's batch and length, a
loss was not finite, a LoRA matrix never moved, the adapter changed nothing, generation produced nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import resource
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# bench/ is a folder of scripts, not a package: put this file's folder on the path so that the sibling module
# imports whether this runs as a script or is loaded by path (as tests/test_gpu_check.py does).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_model import GIB, N_SPECIAL, SHAPES, default_workdir, llama_config, write_random_checkpoint  # noqa: E402
from gpu_model import write_tokenizer as write_tokenizer  # noqa: E402  re-exported: the tests reach it through here

CARD = "llama2-7b-qlora"
RANDOM_NOTE = ("WEIGHTS ARE RANDOM: this is Llama-2-7B's shape, not its weights; the memory and speed figures hold, "
               "the losses and outputs mean nothing")
T0 = time.perf_counter()


def log(msg: str) -> None:
    # Elapsed time on every line: if a one-shot GPU run hits its time limit, the log shows where it was.
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


# --------------------------------------------------------------------------- workload


def words(rng: random.Random, n: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(N_SPECIAL, vocab_size)}" for _ in range(n))


def make_items(n_train: int, n_eval: int, max_length: int, vocab_size: int, seed: int) -> dict[str, Any]:
    """Synthetic prompt/answer pairs of exactly `max_length` tokens (BOS + prompt + answer + EOS).

    Every answer is the same word sequence (a quarter of the length), so a LoRA that learns anything learns it:
    scoring with the adapter should then prefer that answer over random ones of the same length.
    """
    from localaug.protocols import EvalItem, TrainItem

    rng = random.Random(seed)
    n_answer = max_length // 4
    n_prompt = max_length - n_answer - 2
    answer = " " + words(rng, n_answer, vocab_size)
    train = [TrainItem(words(rng, n_prompt, vocab_size), answer) for _ in range(n_train)]
    head = " ".join(answer.split()[:8])  # choices: the trained answer's first 8 words vs 3 random 8-word ones
    score = [EvalItem(words(rng, n_prompt, vocab_size),
                      choices=(" " + head, *(" " + words(rng, 8, vocab_size) for _ in range(3))))
             for _ in range(n_eval)]
    gen = [words(rng, n_prompt, vocab_size) for _ in range(n_eval)]
    return {"train": train, "score": score, "gen_prompts": gen, "n_prompt": n_prompt, "n_answer": n_answer}


def quant_facts(model: Any) -> dict[str, Any]:
    """What the loaded model really is: count its 4-bit layers and read one's quantisation state."""
    import torch

    q4 = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and type(m).__name__ != "Linear4bit"]
    facts: dict[str, Any] = {"linear4bit": len(q4), "other_linear": len(linear)}
    if q4:
        qs = getattr(q4[0].weight, "quant_state", None)
        facts.update({"quant_type": getattr(qs, "quant_type", None),
                      "double_quant": bool(getattr(qs, "nested", False)),
                      "compute_dtype": str(getattr(q4[0], "compute_dtype", None)).replace("torch.", "")})
    facts["device"] = str(next(model.parameters()).device)
    return facts


def versions() -> dict[str, Any]:
    import peft
    import torch
    import transformers

    try:
        import bitsandbytes

        bnb = bitsandbytes.__version__
    except ImportError:
        bnb = None
    v: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "bitsandbytes": bnb, "transformers": transformers.__version__,
                         "peft": peft.__version__}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v.update({"gpu": p.name, "gpu_memory_gib": round(p.total_memory / GIB, 1)})
    return v


class Mem:
    """Peak memory per phase: CUDA allocator peaks on a GPU, the process's peak RSS on CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.phases: dict[str, dict[str, float]] = {}

    def start(self) -> None:
        if self.cuda:
            import gc

            import torch

            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # blocks cached by an earlier phase must not count as this phase's
            torch.cuda.reset_peak_memory_stats()

    def stop(self, phase: str) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.phases[phase] = {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
                                  "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2)}
        else:
            # RSS has no per-phase reset: this is the process's peak up to the end of the phase.
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            self.phases[phase] = {"peak_rss_so_far_gib": round(rss, 2)}

    def summary(self) -> dict[str, Any]:
        key = "peak_reserved_gib" if self.cuda else "peak_rss_so_far_gib"
        out: dict[str, Any] = {"phases": self.phases, "peak_gib": max(p[key] for p in self.phases.values()),
                               "measure": "torch.cuda.max_memory_reserved" if self.cuda else "process peak RSS"}
        if self.cuda:
            alloc = max(p["peak_allocated_gib"] for p in self.phases.values())
            out["peak_allocated_gib"] = alloc
            # A "24 GB" card shows about 22.5 GiB to CUDA (A10G; 23.6 on a 4090), and the CUDA context, which the
            # allocator does not count, takes ~0.5 GiB more: 22 GiB is the bound. Reserved memory is what the
            # allocator kept on a big card; under pressure it frees cached blocks before failing, so what must fit
            # is the allocated peak plus some fragmentation: "tight" when only that fits.
            out["fits_24gb_card"] = "yes" if out["peak_gib"] <= 22.0 else "tight" if alloc <= 22.0 else "no"
        return out


def run_check(res: dict[str, Any], shape: str, steps: int, device: str, gen_tokens: int, seed: int,
              workdir: Path, processes: int = 1, fsdp: bool = False) -> None:
    """Fill `res` as the check goes, so that a run that dies half-way still reports what it measured."""
    import torch

    from localaug.student import load_student

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda, but torch sees no CUDA GPU")
    if shape == "llama2-7b" and not cuda:
        raise SystemExit("gpu_check: the llama2-7b shape needs a CUDA GPU (13.5 GB of weights); use --shape tiny")
    if cuda and processes > torch.cuda.device_count():
        raise SystemExit(f"gpu_check: --processes {processes}, but torch sees {torch.cuda.device_count()} GPU(s)")
    if fsdp and not cuda:
        raise SystemExit("gpu_check: --fsdp needs CUDA GPUs (FSDP + QLoRA is refused on CPU)")
    res.update({"weights": RANDOM_NOTE, "shape": shape, "config": SHAPES[shape], "card": CARD,
                "versions": versions()})
    log(f"gpu_check: {RANDOM_NOTE}")
    log(f"versions: {json.dumps(res['versions'])}")
    config = llama_config(shape)
    model_dir = workdir / f"{shape}-random"
    model_dir.mkdir(parents=True, exist_ok=True)
    # The tiny shape is cut into several shards too, so that the CPU run also loads a sharded checkpoint (index).
    shard_gib = 2.0 if shape == "llama2-7b" else 0.0001
    res["checkpoint"] = write_random_checkpoint(config, model_dir, "cuda" if cuda else "cpu", seed, shard_gib)
    log(f"checkpoint: {json.dumps(res['checkpoint'])}")

    # The card as a user would load it; only the weights source changes (and the device, for the CPU run). One
    # epoch, so that the number of optimizer steps is exactly the number of batches given.
    overrides: dict[str, Any] = {"hf_path": str(model_dir), "epochs": 1}
    if not cuda:
        overrides["device"] = "cpu"
    if processes > 1 or fsdp:  # torchrun workers (localaug/student/distributed.py), one per GPU
        overrides.update(processes=processes, fsdp=fsdp)
    res["overrides"] = {k: v for k, v in overrides.items() if k != "hf_path"} | {"hf_path": "<random checkpoint>"}
    st = load_student(CARD, **overrides)
    plan = st.plan
    res["identity"] = st.identity.replace(str(model_dir), "<random checkpoint>")
    bs, ga, max_len = plan.train.batch_size, plan.train.grad_accum, plan.train.max_length
    n_eval = int(plan.eval_batch_size)
    # Each optimizer step takes batch x grad_accum rows on every process.
    items = make_items(steps * bs * ga * processes, n_eval, max_len, config.vocab_size, seed)
    res["plan"] = {"device": plan.device, "precision": plan.precision, "quantization": plan.quantization,
                   "processes": plan.processes, "fsdp": plan.fsdp,
                   # the card's typed sections, as plain dicts for the JSON report
                   "lora": plan.lora.model_dump(), "train": plan.train.model_dump(), "eval_batch_size": n_eval,
                   "max_new_tokens_cap": plan.max_new_tokens}
    mem = Mem(cuda)

    # ---- training: the card's batch x grad_accum x max_length, for `steps` optimizer steps
    marks: list[tuple[float, int, float | None]] = []

    def progress(done: int, total: int, info: dict[str, Any]) -> None:
        if cuda:
            torch.cuda.synchronize()  # a step is over when the GPU is done with it
        now = time.perf_counter()
        if info.get("worker_time"):  # several processes: when rank 0 ended the step (we hear of it up to 0.5 s late)
            now -= max(0.0, time.time() - info["worker_time"])
        marks.append((now, done, info.get("loss")))
        log(f"  step {done}/{total} {json.dumps(info)}")

    adapter = workdir / "adapter"
    mem.start()
    t0 = time.perf_counter()
    stats = st.train(items["train"], adapter, seed=seed, progress=progress)
    train_s = time.perf_counter() - t0
    mem.stop("train (load + LoRA steps)")
    step_s = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]  # the first step carries the warm-up
    timed = statistics.median(step_s) if step_s else None
    tokens_per_step = bs * ga * max_len * processes
    losses = [m[2] for m in marks if m[2] is not None] + ([stats.final_loss] if stats.final_loss is not None else [])
    res["train"] = {
        "steps": stats.steps, "batch_size": bs, "grad_accum": ga, "max_length": max_len,
        "tokens_per_step": tokens_per_step, "train_tokens": stats.train_tokens,
        "answer_tokens_per_row": items["n_answer"] + 1, "seconds_total": round(train_s, 1),
        "load_and_first_step_s": round(marks[0][0] - t0, 1) if marks else None,
        "step_s": [round(s, 3) for s in step_s], "step_s_median": None if timed is None else round(timed, 3),
        "tokens_per_s": None if timed is None else round(tokens_per_step / timed, 1),
        "losses": [round(x, 4) for x in losses], "processes": stats.processes,
        # several processes: the workers' own peak (the driver holds no model while they train), and the time
        # spent starting them (torchrun, imports, loading) before the first step
        "worker_peak_gpu_gib": stats.extra.get("peak_gpu_gib"), "launch_s": stats.extra.get("launch_seconds"),
    }
    log(f"train: {json.dumps(res['train'])}")

    # ---- evaluation: a fresh load, likelihood scoring (base and adapter), greedy generation (adapter)
    from localaug.protocols import EvalItem

    mem.start()
    t0 = time.perf_counter()
    base = st.base_model()  # public on HFStudent: separates the load time from the scoring time
    load_s = time.perf_counter() - t0
    weights_gib = round(torch.cuda.memory_allocated() / GIB, 2) if cuda else None
    res["quant"] = quant_facts(base)
    mem.stop("load for evaluation")

    def timed_eval(adapter_dir: Path | None, eval_items: list[Any]) -> tuple[list[Any], float]:
        t = time.perf_counter()
        out = st.evaluate(adapter_dir, eval_items)
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    mem.start()
    base_scores, _ = timed_eval(None, items["score"])
    tuned_scores, score_s = timed_eval(adapter, items["score"])
    mem.stop(f"scoring ({n_eval} prompts x 4 choices)")
    gen_items = [EvalItem(p, max_new_tokens=gen_tokens) for p in items["gen_prompts"]]
    mem.start()
    generated, gen_s = timed_eval(adapter, gen_items)
    mem.stop(f"generation ({n_eval} rows x {gen_tokens} tokens)")
    new_tokens = sum(len(st.tokenizer(r.output, add_special_tokens=False)["input_ids"]) for r in generated)
    res["eval"] = {
        "load_s": round(load_s, 1), "weights_gib": weights_gib,
        "score": {"prompts": n_eval, "prompt_tokens": items["n_prompt"] + 1, "choices": 4,
                  "seconds_adapter": round(score_s, 2),
                  "picks_trained_answer_base": sum(r.choice_index == 0 for r in base_scores),
                  "picks_trained_answer_adapter": sum(r.choice_index == 0 for r in tuned_scores)},
        "generate": {"rows": n_eval, "max_new_tokens": gen_tokens, "new_tokens": new_tokens,
                     "seconds": round(gen_s, 2), "tokens_per_s": round(new_tokens / gen_s, 1)},
    }
    log(f"eval: {json.dumps(res['eval'])}")
    res["memory"] = mem.summary()

    # ---- checks: each must hold, or the exit status says so
    from safetensors.torch import load_file

    lora_b = {k: v for k, v in load_file(str(adapter / "adapter_model.safetensors")).items() if "lora_B" in k}
    n_layers = config.num_hidden_layers
    q = res["quant"]
    res["checks"] = {
        "every_decoder_linear_is_4bit": q["linear4bit"] == 7 * n_layers,
        "nf4_double_quant_bf16_compute": (q.get("quant_type"), q.get("double_quant"), q.get("compute_dtype"))
        == ("nf4", True, "bfloat16"),
        "steps_at_card_batch_and_length": stats.steps == steps and stats.train_tokens == steps * tokens_per_step,
        "losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "every_lora_b_moved": len(lora_b) == 7 * n_layers and all(bool(v.abs().sum() > 0) for v in lora_b.values()),
        "adapter_changes_scores": any(a.scores != b.scores for a, b in zip(base_scores, tuned_scores, strict=True)),
        "generation_produced_tokens": new_tokens > 0,
        "on_requested_device": q["device"].startswith("cuda" if cuda else "cpu"),
        "trained_on_requested_processes": stats.processes == processes,
    }
    res["ok"] = all(res["checks"].values())


def report(res: dict[str, Any]) -> str:
    t, e, m, c = res["train"], res["eval"], res["memory"], res["checkpoint"]
    v = res["versions"]
    unit = "GiB"
    lines = [
        f"== gpu_check: {res['shape']} shape, card {res['card']}: {res['identity']}",
        f"   {RANDOM_NOTE}.",
        f"   versions: torch {v['torch']} (CUDA {v['cuda']}), bitsandbytes {v['bitsandbytes']}, "
        f"transformers {v['transformers']}, peft {v['peft']}" + (f", {v['gpu']}" if "gpu" in v else ", no GPU"),
        f"   checkpoint: {c['params'] / 1e6:,.1f} M params, {c['gb']} GB bf16 in {c['shards']} shards, written to "
        f"{c['dir']} in {c['seconds']} s",
        f"   4-bit: {res['quant']['linear4bit']} Linear4bit layers, {res['quant'].get('quant_type')}, double quant "
        f"{res['quant'].get('double_quant')}, compute {res['quant'].get('compute_dtype')}",
        f"   train: {t['steps']} steps of {t['batch_size']} x {t['grad_accum']} (grad accum) x {t['max_length']} "
        f"tokens; step {t['step_s_median']} s (median after the first), {t['tokens_per_s']} tokens/s; "
        f"load + first step {t['load_and_first_step_s']} s; losses {t['losses']}"
        + (f"; {t['processes']} processes (launch {t['launch_s']} s, worker peak GPU {t['worker_peak_gpu_gib']} GiB)"
           if t.get("processes", 1) > 1 or res["plan"].get("fsdp") else ""),
        f"   eval: load {e['load_s']} s; scoring {e['score']['prompts']} prompts x {e['score']['choices']} choices "
        f"{e['score']['seconds_adapter']} s; generation {e['generate']['new_tokens']} tokens in "
        f"{e['generate']['seconds']} s ({e['generate']['tokens_per_s']} tokens/s)",
        f"   memory ({m['measure']}): peak {m['peak_gib']} {unit}"
        + (f" (allocated {m['peak_allocated_gib']} {unit}); fits a 24 GB card: {m['fits_24gb_card']}"
           if "fits_24gb_card" in m else ""),
    ]
    lines += [f"     {phase}: {json.dumps(p)}" for phase, p in m["phases"].items()]
    failed = [k for k, ok in res["checks"].items() if not ok]
    lines.append("   checks: " + ("all passed" if not failed else f"FAILED: {', '.join(failed)}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps (each = batch x grad_accum rows)")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--gen-tokens", type=int, default=64, help="new tokens per generated row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, help="where the random checkpoint goes (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--processes", type=int, default=1, help="train on N torchrun processes (one per GPU)")
    ap.add_argument("--fsdp", action="store_true", help="FSDP + QLoRA over the processes' GPUs (CUDA only)")
    a = ap.parse_args(argv)
    # The check must run the checkout it lives in (its models/ card and its localaug), installed or not.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if a.shape == "llama2-7b" and a.device == "cpu":  # refuse before minutes of imports and a 13.5 GB write
        ap.error("the llama2-7b shape needs a CUDA GPU (13.5 GB of weights, hours on a CPU); use --shape tiny")
    if a.steps < 1 or a.gen_tokens < 1 or a.processes < 1:
        ap.error("--steps, --gen-tokens and --processes must be at least 1 (2 steps or more for a step time)")
    workdir = a.workdir or default_workdir(a.shape)
    res: dict[str, Any] = {"ok": False}
    try:
        run_check(res, a.shape, a.steps, a.device, a.gen_tokens, a.seed, workdir, a.processes, a.fsdp)
    except Exception as e:  # any failure: keep what was measured (the JSON below), then fail
        res["error"] = "".join(traceback.format_exception(e))[-4000:]
        log(f"gpu_check FAILED: {res['error']}")
    finally:
        if a.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(res, indent=1) + "\n")
    if "checks" in res:
        print(report(res), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
