"""The student: a local causal LM fine-tuned with LoRA (CPU) or QLoRA (CUDA), from the base weights each call.

`load_student(card)` resolves the model card into a `StudentPlan` (device, precision, quantisation, LoRA and
training settings), finds the weights (a local Hugging Face directory, or a GGUF file that is dequantised by
transformers once and cached as safetensors) and returns an `HFStudent`, which implements the `Student`
protocol. Training lives in `student_train.py`, evaluation (likelihood scoring, greedy generation) in
`student_eval.py`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import UserError
from .modelcards import _LORA_KEYS, _STUDENT_KEYS, _TRAIN_KEYS, DEFAULT_MODEL, ModelCard, load_model_card
from .protocols import EvalItem, EvalResult, ProgressFn, TrainItem, TrainStats


def set_offline_env() -> None:
    """Offline is a guarantee: set before transformers / huggingface_hub are first imported (all such imports
    in the student modules are inside functions that run after this)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"


set_offline_env()

_DEFAULT_LORA: dict[str, Any] = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
_DEFAULT_TRAIN: dict[str, Any] = {
    "epochs": 3, "lr": 2.0e-4, "batch_size": 8, "grad_accum": 1, "max_length": 256, "warmup_ratio": 0.0,
    "weight_decay": 0.0, "scheduler": "linear",
}
_SOURCE_OVERRIDES = {"hf_path", "gguf_path"}


@dataclass
class StudentPlan:
    """Everything that decides how the student is loaded, trained and evaluated (resolved, no 'auto')."""

    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "bf16" | "fp16"
    quantization: str  # "none" | "nf4"
    lora: dict[str, Any] = field(default_factory=lambda: dict(_DEFAULT_LORA))
    train: dict[str, Any] = field(default_factory=lambda: dict(_DEFAULT_TRAIN))
    eval_batch_size: int = 16
    max_new_tokens: int | None = None  # caps EvalItem.max_new_tokens when set

    def torch_dtype(self) -> Any:
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def _cpu_has_bf16() -> bool:
    # bf16 matmuls are only fast with native support (AVX512-BF16 / AMX); elsewhere they are emulated and slow.
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_plan(student: dict[str, Any], overrides: dict[str, Any] | None = None) -> StudentPlan:
    """Merge the card's `student` section with overrides and resolve every 'auto' for this machine."""
    import torch

    cfg = {k: v for k, v in student.items() if k not in ("lora", "train")}
    lora = {**_DEFAULT_LORA, **(student.get("lora") or {})}
    train = {**_DEFAULT_TRAIN, **(student.get("train") or {})}
    for k, v in (overrides or {}).items():
        if k in ("lora", "train") and isinstance(v, dict):
            (lora if k == "lora" else train).update(v)
        elif k in _LORA_KEYS:
            lora[k] = v
        elif k in _TRAIN_KEYS:
            train[k] = v
        elif k in _STUDENT_KEYS:
            cfg[k] = v
        else:
            allowed = sorted(_STUDENT_KEYS | _LORA_KEYS | _TRAIN_KEYS | _SOURCE_OVERRIDES)
            raise UserError(f"unknown student setting '{k}' (allowed: {', '.join(allowed)})")

    device = str(cfg.get("device") or "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"student.device must be auto, cpu or cuda, not '{device}'", field="student.device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("student.device is 'cuda' but no CUDA GPU is available", field="student.device")

    quant = str(cfg.get("quantization") or "auto")
    if quant == "auto":
        quant = "nf4" if device == "cuda" else "none"
    if quant not in ("none", "nf4"):
        raise UserError(f"student.quantization must be auto, none or nf4, not '{quant}'",
                        field="student.quantization")

    precision = str(cfg.get("precision") or "auto")
    if precision == "auto":
        # CUDA: bf16 compute for QLoRA (Ampere and newer). CPU: bf16 measured 1.5x faster than fp32 where the
        # CPU has native bf16 (bench/README.md), fp32 elsewhere.
        precision = "bf16" if device == "cuda" or _cpu_has_bf16() else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"student.precision must be auto, fp32, bf16 or fp16, not '{precision}'",
                        field="student.precision")
    return StudentPlan(
        device=device, precision=precision, quantization=quant, lora=lora, train=train,
        eval_batch_size=int(cfg.get("eval_batch_size") or 16),
        max_new_tokens=None if cfg.get("max_new_tokens") is None else int(cfg["max_new_tokens"]),
    )


def model_load_kwargs(plan: StudentPlan) -> dict[str, Any]:
    """Keyword arguments for `AutoModelForCausalLM.from_pretrained` (safetensors only, no remote code)."""
    dtype = plan.torch_dtype()
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    if plan.quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if plan.device == "cuda":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # one whole copy per process (DDP)
    return kwargs


# --------------------------------------------------------------------------- weights


def cache_root() -> Path:
    env = os.environ.get("LOCALAUG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "localaug"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_gguf_dir(gguf: Path, name: str = "model") -> Path:
    """A safetensors copy of a GGUF model, made once per GGUF hash (GGUF load ~50 s, this reload ~4 s)."""
    digest = file_sha256(gguf)
    final = cache_root() / "models" / f"{name}-{digest[:16]}"
    if (final / "config.json").is_file():
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers marks a GGUF-loaded model as quantised and refuses to save it; the weights are already
        # dequantised to fp32, so drop the marker (fp32 keeps the dequantised values exact).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "localaug_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
        del model
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any other model folder
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: keep theirs
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_hf_dir(p: Path, card: ModelCard | None = None) -> Path:
    where = card.path if card else None
    if not p.is_dir():
        raise UserError(f"model directory not found: {p}", file=where, field="source.hf_path")
    if not any(p.glob("*.safetensors")):
        raise UserError(f"no *.safetensors weights in {p}", file=where, field="source.hf_path")
    if not (p / "config.json").is_file():
        raise UserError(f"no config.json in {p}", file=where, field="source.hf_path")
    return p


def load_student(card: str | Path | ModelCard = DEFAULT_MODEL, **overrides: Any) -> HFStudent:
    """Load a student from a model card name or path. Overrides: any `student.*` key, a flat LoRA/train key
    (e.g. `epochs=1`, `r=8`), or a weights source (`hf_path=...`, `gguf_path=...`) replacing the card's."""
    mc = card if isinstance(card, ModelCard) else load_model_card(card)
    source = dict(mc.source)
    for k in _SOURCE_OVERRIDES & overrides.keys():
        source = {k: str(overrides.pop(k))}
    plan = resolve_plan(mc.student, overrides)
    if "hf_path" in source:
        model_dir = _check_hf_dir(Path(source["hf_path"]).expanduser(), mc)
        identity = f"{mc.name} hf:{model_dir}"
    else:
        gguf = replace(mc, source=source).gguf_file()
        model_dir = converted_gguf_dir(gguf, mc.name)
        src = json.loads((model_dir / "localaug_source.json").read_text())
        identity = f"{mc.name} gguf-sha256:{src['sha256'][:16]}"
    identity += f" [{plan.device}/{plan.precision}/{'qlora-nf4' if plan.quantization == 'nf4' else 'lora'}]"
    return HFStudent(model_dir, plan, identity)


# --------------------------------------------------------------------------- the student


def _contiguous_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # torch 2.13 CPU: a bf16 Linear on a strided 3-D input (what `logits_to_keep=1` hands the output layer in
    # scoring and in every `generate` step) takes ~25 s for 16 rows of Gemma's 262k-word head instead of 0.03 s.
    return (args[0].contiguous(), *args[1:])


class HFStudent:
    """A transformers causal LM plus LoRA adapters; implements `localaug.protocols.Student`."""

    def __init__(self, model_dir: Path, plan: StudentPlan, identity: str) -> None:
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.plan = plan
        self.identity = identity
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=False)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._model: Any = None  # the pristine base model (CPU: kept; 4-bit: reloaded for each training)
        self.last_eval_info: dict[str, Any] = {}

    # The base weights are never modified: LoRA layers are injected for a call and removed afterwards.
    def base_model(self) -> Any:
        if self._model is None:
            self._model = self._load_base()
        return self._model

    def _load_base(self) -> Any:
        from transformers import AutoModelForCausalLM

        if self.plan.quantization == "nf4":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise UserError("4-bit QLoRA needs bitsandbytes: pip install 'localaug[gpu]'",
                                field="student.quantization") from None
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, **model_load_kwargs(self.plan))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        head = model.get_output_embeddings()
        if head is not None:
            head.register_forward_pre_hook(_contiguous_input)
        return model

    def _drop_model(self) -> None:
        self._model = None
        gc.collect()
        if self.plan.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def train(
        self, items: Sequence[TrainItem], out_dir: Path, seed: int, progress: ProgressFn | None = None
    ) -> TrainStats:
        from .student_train import train_adapter

        if not items:
            raise UserError("no training examples")
        if self.plan.quantization == "nf4":
            # A 4-bit model that has run inference can silently lose its LoRA gradients (bitsandbytes repacks
            # the weights): always train from a fresh load.
            self._drop_model()
            model = self._load_base()
        else:
            model = self.base_model()
        try:
            return train_adapter(model, self.tokenizer, items, Path(out_dir), seed, self.plan, progress)
        finally:
            if self.plan.quantization == "nf4":
                del model
                self._drop_model()

    def evaluate(
        self, adapter_dir: Path | None, items: Sequence[EvalItem], progress: ProgressFn | None = None
    ) -> list[EvalResult]:
        from .student_eval import evaluate_items, with_adapter

        if adapter_dir is not None:
            adapter_dir = Path(adapter_dir)
            if not (adapter_dir / "adapter_config.json").is_file():
                raise UserError(f"no LoRA adapter (adapter_config.json) in {adapter_dir}")
        model = self.base_model()
        with with_adapter(model, adapter_dir) as m:
            results, info = evaluate_items(m, self.tokenizer, items, self.plan, progress)
        self.last_eval_info = info
        return results
