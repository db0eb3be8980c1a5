"""LoRA / QLoRA supervised fine-tuning through the transformers Trainer, with two speed-ups.

1. Answer-only logits. Gemma 3 270M spends 168M of its 268M parameters on the tied 262k-word embedding /
   output layer, so computing logits for every position costs more than the rest of the network. We pass a
   boolean `logits_to_keep` mask of the positions that predict a completion token, so the output layer runs
   only there (same loss as `model(labels=...)`, ~2x faster, half the memory). It still goes through the
   model's own forward, so DDP / FSDP in the torchrun workers keep working.
2. Length-grouped batches: shuffled, sorted by length inside mega-batches, batches shuffled again.

The Trainer is kept (not a hand loop) because it gives multi-GPU, mixed precision, schedulers and gradient
accumulation for free; its own overhead on a step of seconds is negligible. The same `train_adapter` runs in the
driver (one process) and in each torchrun worker (worker.py): there the Trainer wraps the model in DDP or FSDP,
shards the batches over the ranks, and only rank 0 writes the adapter.
"""

from __future__ import annotations

import random
import resource
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..files import atomic_dir
from ..protocols import ProgressFn, TrainItem, TrainStats

IGNORE = -100


# --------------------------------------------------------------------------- data


def encode_item(tok: Any, item: TrainItem, max_length: int, add_eos: bool = True) -> dict[str, list[int]]:
    """Token ids of prompt + completion; labels are IGNORE on the prompt, so the loss sees the answer only.

    Prompt and completion are tokenised separately (prompt with BOS, completion without special tokens),
    exactly as `evaluate.py` scores and generates, so training and evaluation see the same token boundary.
    """
    p = tok(item.prompt, add_special_tokens=True)["input_ids"]
    c = tok(item.completion, add_special_tokens=False)["input_ids"]
    if add_eos and tok.eos_token_id is not None:
        c = c + [tok.eos_token_id]
    if len(c) >= max_length:  # keep the start of an over-long answer and at least one prompt token
        c = c[: max_length - 1]
    if len(p) + len(c) > max_length:  # cut the prompt from the left, keeping BOS
        keep = max_length - len(c)
        bos = p[:1] if tok.bos_token_id is not None and p[:1] == [tok.bos_token_id] else []
        p = bos + p[len(p) - (keep - len(bos)):] if keep > len(bos) else p[:keep]
    return {"input_ids": p + c, "labels": [IGNORE] * len(p) + c}


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padded positions are masked and ignored by the loss."""
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[i, :k] = torch.tensor(b["input_ids"])
        labels[i, :k] = torch.tensor(b["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Shuffle, sort by length within mega-batches of `mega` batches, then shuffle the batches.

    Unlike transformers' LengthGroupedSampler it shuffles batch order too (no longest-to-shortest curriculum)
    and keeps the one short batch last, so the DataLoader's fixed-size chunking lines up with our batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega: int = 16) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1000003 + self.epoch)
        self.epoch += 1
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        m = self.batch_size * self.mega
        ordered: list[int] = []
        for s in range(0, len(idx), m):
            ordered += sorted(idx[s:s + m], key=lambda i: -self.lengths[i])
        batches = [ordered[s:s + self.batch_size] for s in range(0, len(ordered), self.batch_size)]
        tail = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        rng.shuffle(batches)
        if tail:
            batches.append(tail)
        return iter([i for b in batches for i in b])


# --------------------------------------------------------------------------- loss


def answer_only_loss(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over completion tokens, computing output logits only where a label exists.

    Equal to `model(input_ids, attention_mask, labels=labels).loss` (the shift is the same).
    """
    tgt = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = tgt != IGNORE
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False)
    logits = out.logits
    if logits.dim() == 3:  # a model whose forward ignores logits_to_keep: full logits (correct, just slower)
        logits = logits[keep]
    return F.cross_entropy(logits.float(), tgt[tgt != IGNORE])


# --------------------------------------------------------------------------- training


def _lora_config(plan: Any) -> Any:
    from peft import LoraConfig

    lo = plan.lora
    tm = lo.target_modules
    return LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
        target_modules=tm if isinstance(tm, str) else list(tm), bias="none", task_type="CAUSAL_LM",
    )


def prepare_peft(model: Any, plan: Any, seed: int) -> Any:
    """Wrap the base model with fresh LoRA adapters (seeded init); the base weights stay frozen."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    set_seed(seed)
    if plan.fsdp:
        # FSDP + QLoRA as TRL and the PEFT guide do it: no prepare_model_for_kbit_training (it casts layers to
        # fp32, and FSDP needs one dtype to flatten) and LoRA weights kept in the storage dtype.
        peft_model = get_peft_model(model, _lora_config(plan), autocast_adapter_dtype=False)
    else:
        if plan.quantization == "nf4":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model = get_peft_model(model, _lora_config(plan))
    peft_model.train()
    return peft_model


def _trainer_classes() -> tuple[type, type]:
    from transformers import Trainer, TrainerCallback

    class AnswerOnlyTrainer(Trainer):
        def __init__(self, *a: Any, sampler: torch.utils.data.Sampler | None = None, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._sampler = sampler
            self.tokens_seen = 0
            self.loss_is_scaled_for_ga = False  # our loss is a per-batch mean: let the Trainer divide by GA

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return self._sampler if self._sampler is not None else super()._get_train_sampler(train_dataset)

        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            self.tokens_seen += int(inputs["attention_mask"].sum())
            loss = answer_only_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
            return (loss, None) if return_outputs else loss

    class Progress(TrainerCallback):
        def __init__(self, fn: ProgressFn | None, trainer_ref: list[Any]) -> None:
            self.fn, self.ref, self.t0, self.loss = fn, trainer_ref, time.perf_counter(), None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kw: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.fn is not None:
                dt = max(time.perf_counter() - self.t0, 1e-9)
                info: dict[str, Any] = {"tokens_per_s": round(self.ref[0].tokens_seen / dt, 1)}
                if self.loss is not None:  # no loss logged before the first step ends
                    info["loss"] = self.loss
                self.fn(state.global_step, state.max_steps, info)

    return AnswerOnlyTrainer, Progress


def save_adapter_atomic(peft_model: Any, out_dir: Path, meta: dict[str, Any] | None = None,
                        state_dict: dict[str, Any] | None = None) -> None:
    """Write the adapter (safetensors) into a temp dir next to `out_dir`, then rename it into place.

    `state_dict`: the full weights gathered from FSDP shards (None: read them from `peft_model`)."""
    import json

    with atomic_dir(Path(out_dir)) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if meta is not None:
            (tmp / "localaug_train.json").write_text(json.dumps(meta, indent=1))


def training_kwargs(plan: Any, output_dir: str, seed: int, distributed: bool = False) -> dict[str, Any]:
    """The TrainingArguments of a training stage: in the driver, or (`distributed`) in each torchrun worker."""
    tc = plan.train
    nf4 = plan.quantization == "nf4"
    kw: dict[str, Any] = dict(
        output_dir=output_dir, per_device_train_batch_size=tc.batch_size, gradient_accumulation_steps=tc.grad_accum,
        num_train_epochs=tc.epochs, max_steps=tc.max_steps or -1, learning_rate=tc.lr, warmup_steps=tc.warmup_ratio,
        weight_decay=tc.weight_decay, lr_scheduler_type=tc.scheduler,
        logging_steps=1, save_strategy="no", report_to="none", seed=seed, data_seed=seed,
        use_cpu=plan.device == "cpu", bf16=plan.device == "cuda" and plan.precision == "bf16",
        fp16=plan.device == "cuda" and plan.precision == "fp16", dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True,
        # FSDP checkpoints activations itself (fsdp_config below: the Trainer's kind would gather weights twice)
        activation_checkpointing=nf4 and not plan.fsdp, activation_checkpointing_kwargs={"use_reentrant": False},
    )
    if distributed:
        # gloo on CPU, NCCL on CUDA; every LoRA weight is used in every step, so DDP need not search the graph
        kw.update(ddp_backend="nccl" if plan.device == "cuda" else "gloo", ddp_find_unused_parameters=False)
    if plan.fsdp:
        # The FSDP + QLoRA settings of the bitsandbytes / PEFT guides (peft examples/sft fsdp_config_qlora.yaml).
        # FSDP version 1: FSDP2 does not shard bitsandbytes' Params4bit reliably yet (accelerate #3874, #3983).
        # On CPU (the tests only: a user's plan is refused there) accelerate cannot sync module states, and every
        # rank has loaded the whole model anyway.
        cuda = plan.device == "cuda"
        kw.update(fsdp=True, fsdp_config={
            "version": 1, "reshard_after_forward": "full_shard", "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "backward_prefetch": "backward_pre", "forward_prefetch": False, "use_orig_params": False,
            "cpu_ram_efficient_loading": cuda, "sync_module_states": cuda, "activation_checkpointing": True,
            "state_dict_type": "FULL_STATE_DICT"})
    return kw


def fsdp_environment(plan: Any) -> dict[str, str]:
    """Set before the FSDP worker loads the model, so transformers loads it for FSDP (what `accelerate launch`
    would set; the PEFT guide names FSDP_CPU_RAM_EFFICIENT_LOADING for launches without it): rank 0 reads the
    weights, FSDP broadcasts them (sync_module_states). On CPU (tests) every rank reads them."""
    return {"ACCELERATE_USE_FSDP": "true",
            "FSDP_CPU_RAM_EFFICIENT_LOADING": "true" if plan.device == "cuda" else "false"}


def _sum_over_ranks(value: float, device: Any, op: str = "sum") -> float:
    """`value` summed (or maxed) over the workers; itself when there is one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return float(t.item())


def train_adapter(model: Any, tok: Any, items: Sequence[TrainItem], out_dir: Path, seed: int, plan: Any,
                  progress: ProgressFn | None = None, group_by_length: bool = True,
                  distributed: bool = False) -> TrainStats:
    """Fine-tune fresh LoRA adapters on `model` (left unchanged afterwards) and save them into `out_dir`.

    `distributed`: this is one of several torchrun workers (worker.py); every worker returns the same stats
    (tokens summed over the workers), and only rank 0 writes the adapter."""
    from transformers import TrainingArguments

    examples = [encode_item(tok, it, plan.train.max_length) for it in items]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    peft_model = prepare_peft(model, plan, seed)
    AnswerOnlyTrainer, Progress = _trainer_classes()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="localaug-train-") as scratch:
        args = TrainingArguments(**training_kwargs(plan, scratch, seed, distributed))
        ref: list[Any] = []
        sampler = LengthGroupedSampler([len(e["input_ids"]) for e in examples], plan.train.batch_size, seed) \
            if group_by_length else None
        trainer = AnswerOnlyTrainer(
            model=peft_model, args=args, train_dataset=examples, sampler=sampler,
            data_collator=lambda b: collate(b, pad_id), callbacks=[Progress(progress, ref)],
        )
        ref.append(trainer)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # progress goes through `progress`, not print()
        result = trainer.train()
        # Collectives: every worker takes part (FSDP gathers the full LoRA weights from the shards here).
        tokens = int(_sum_over_ranks(trainer.tokens_seen, args.device))
        peak_mb = _sum_over_ranks(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, args.device, "max")
        peak_gpu = _sum_over_ranks(torch.cuda.max_memory_allocated() / 2**30, args.device, "max") \
            if plan.device == "cuda" else None
        state_dict = trainer.accelerator.get_state_dict(trainer.model) if plan.fsdp else None
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = TrainStats(
        steps=int(trainer.state.global_step), train_tokens=tokens, seconds=round(seconds, 2),
        final_loss=losses[-1] if losses else float(result.training_loss), peak_rss_mb=round(peak_mb, 1),
        processes=args.world_size,
        extra={"tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "examples": len(examples),
               "planned_steps": int(trainer.state.max_steps), "device": plan.device, "precision": plan.precision,
               "quantization": plan.quantization, "fsdp": plan.fsdp, "losses": losses,
               "peak_gpu_gib": None if peak_gpu is None else round(peak_gpu, 2), "answer_tokens": sum(
                   sum(1 for x in e["labels"] if x != IGNORE) for e in examples)},
    )
    if args.process_index == 0:  # one writer: the workers hold the same weights (DDP) or rank 0 the gathered ones
        save_adapter_atomic(peft_model, out_dir, {"seed": seed, "stats": stats.__dict__}, state_dict)
    if not distributed:  # a worker exits after this; the driver keeps its model for evaluation
        peft_model.unload()  # removes the LoRA layers again: the base model is back to its pristine state
        model.eval()
    return stats
