"""How the student is loaded, trained and evaluated on this machine: the card's student section plus the
run's overrides, with every 'auto' resolved (device, precision, quantisation)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..modelcards import Lora, ModelCard, Source, StudentSection, Training
from ..schema import validate

SOURCE_OVERRIDES = {"hf_path", "gguf_path"}


@dataclass
class StudentPlan:
    """Everything that decides how the student is loaded, trained and evaluated (resolved, no 'auto')."""

    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "bf16" | "fp16"
    quantization: str  # "none" | "nf4"
    lora: Lora
    train: Training
    eval_batch_size: int = 16
    max_new_tokens: int | None = None  # caps EvalItem.max_new_tokens when set
    processes: int = 1  # training processes per stage (distributed.py)
    launcher: str | None = None  # replaces the default torchrun line
    fsdp: bool = False  # FSDP + QLoRA (CUDA only)

    def torch_dtype(self) -> Any:
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def distributed(self) -> bool:
        """Training runs in torchrun workers: several processes, a launcher of the user's, or FSDP (which needs a
        process group even on one GPU). Otherwise it runs in the driver, as it always has."""
        return self.processes > 1 or self.launcher is not None or self.fsdp

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the workers' job file (`from_dict` rebuilds it: nothing is resolved twice)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "lora": self.lora.model_dump(), "train": self.train.model_dump()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentPlan:
        return cls(**{**d, "lora": Lora(**d["lora"]), "train": Training(**d["train"])})


def _cpu_has_bf16() -> bool:
    # bf16 matmuls are only fast with native support (AVX512-BF16 / AMX); elsewhere they are emulated and slow.
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def with_source_overrides(card: ModelCard, overrides: dict[str, Any] | None) -> tuple[ModelCard, dict[str, Any]]:
    """(the card with a weights source from the run's settings, e.g. `hf_path=...`, over its own; the rest)."""
    rest = dict(overrides or {})
    for k in SOURCE_OVERRIDES & rest.keys():
        path = card.path
        card = card.model_copy(update={"source": Source(**{k: str(rest.pop(k))})})
        card._path = path
    return card, rest


def merge_overrides(student: StudentSection, overrides: dict[str, Any] | None) -> StudentSection:
    """The card's student section with the run's settings over it: any student key, a flat LoRA or
    training key (`epochs=1`, `r=8`), or a nested `lora` / `train` mapping."""
    merged = student.model_dump()
    lora_keys, train_keys = set(merged["lora"]), set(merged["train"])
    for k, v in (overrides or {}).items():
        if k in ("lora", "train") and isinstance(v, dict):
            merged[k].update(v)
        elif k in lora_keys:
            merged["lora"][k] = v
        elif k in train_keys:
            merged["train"][k] = v
        elif k in merged:
            merged[k] = v
        else:
            allowed = sorted((set(merged) - {"lora", "train"}) | lora_keys | train_keys | SOURCE_OVERRIDES)
            raise UserError(f"unknown student setting '{k}' (allowed: {', '.join(allowed)})")
    return validate(StudentSection, merged, prefix="student.")


def resolve_plan(student: StudentSection, overrides: dict[str, Any] | None = None) -> StudentPlan:
    """Merge the card's `student` section with overrides and resolve every 'auto' for this machine."""
    import torch

    s = merge_overrides(student, overrides)
    device = s.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("student.device is 'cuda' but no CUDA GPU is available", field="student.device")
    if device == "cuda" and s.launcher is None and s.processes > max(1, torch.cuda.device_count()):
        raise UserError(f"processes: {s.processes} asks for a GPU each, but this machine has "
                        f"{torch.cuda.device_count()}", field="student.processes")
    if s.fsdp and device != "cuda":
        raise UserError(f"fsdp: true shards the student over CUDA GPUs; this student trains on {device} "
                        "(use processes: N for several CPU processes)", field="student.fsdp")
    quant = s.quantization if s.quantization != "auto" else ("nf4" if device == "cuda" else "none")
    precision = s.precision
    if precision == "auto":
        # CUDA: bf16 compute for QLoRA (Ampere and newer). CPU: bf16 measured 1.5x faster than fp32 where the
        # CPU has native bf16 (bench/README.md), fp32 elsewhere.
        precision = "bf16" if device == "cuda" or _cpu_has_bf16() else "fp32"
    return StudentPlan(device=device, precision=precision, quantization=quant, lora=s.lora, train=s.train,
                       eval_batch_size=s.eval_batch_size, max_new_tokens=s.max_new_tokens,
                       processes=s.processes, launcher=s.launcher, fsdp=s.fsdp)


def model_load_kwargs(plan: StudentPlan, for_training: bool = False) -> dict[str, Any]:
    """Keyword arguments for `AutoModelForCausalLM.from_pretrained` (safetensors only, no remote code).

    FSDP + QLoRA (`for_training` with `plan.fsdp`), as the bitsandbytes and PEFT guides set it up: the 4-bit
    weights are stored in bf16 (`bnb_4bit_quant_storage`, the same dtype as the rest of the model) so FSDP can
    flatten and shard them with the other layers, and no device_map: FSDP places the shards. The driver's own
    copy of an FSDP student (evaluation) is spread over the visible GPUs by layer (device_map "auto"), since
    such a student is one that does not fit one GPU."""
    fsdp = for_training and plan.fsdp
    dtype = plan.torch_dtype()
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    if plan.quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, **({"bnb_4bit_quant_storage": dtype} if fsdp else {}),
        )
    if plan.device == "cuda" and not fsdp:
        # DDP: one whole copy per process, on its own GPU
        kwargs["device_map"] = "auto" if plan.fsdp else {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return kwargs
