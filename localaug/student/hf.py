"""The student: a transformers causal LM plus LoRA adapters, fine-tuned from the base weights each call.

`load_student(card)` resolves the model card into a `StudentPlan` (plan.py), finds the weights
(weights.py) and returns an `HFStudent`, which implements the `Student` protocol. Training lives in
`train.py` (in this process, or in torchrun workers started by `distributed.py` when the card asks for
several processes), evaluation (likelihood scoring, greedy generation) in `evaluate.py`.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..modelcards import DEFAULT_STUDENT, ModelCard, load_model_card
from ..protocols import EvalItem, EvalResult, ProgressFn, TrainItem, TrainStats
from .plan import StudentPlan, model_load_kwargs, resolve_plan, with_source_overrides
from .weights import weights_dir


def load_student(card: str | Path | ModelCard = DEFAULT_STUDENT, **overrides: Any) -> HFStudent:
    """Load a student from a model card name or path. Overrides: any `student.*` key, a flat LoRA/train key
    (e.g. `epochs=1`, `r=8`), or a weights source (`hf_path=...`, `gguf_path=...`) replacing the card's."""
    mc, overrides = with_source_overrides(card if isinstance(card, ModelCard) else load_model_card(card), overrides)
    plan = resolve_plan(mc.student, overrides)
    model_dir, identity = weights_dir(mc)
    identity += f" [{plan.device}/{plan.precision}/{'qlora-nf4' if plan.quantization == 'nf4' else 'lora'}]"
    return HFStudent(model_dir, plan, identity)


# --------------------------------------------------------------------------- the student


def _contiguous_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # torch 2.13 CPU: a bf16 Linear on a strided 3-D input (what `logits_to_keep=1` hands the output layer in
    # scoring and in every `generate` step) takes ~25 s for 16 rows of Gemma's 262k-word head instead of 0.03 s.
    return (args[0].contiguous(), *args[1:])


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(model_dir: Path, plan: StudentPlan, for_training: bool = False) -> Any:
    """The frozen base model, as the plan says (`for_training`: a torchrun worker's copy, see plan.py)."""
    from transformers import AutoModelForCausalLM

    if plan.quantization == "nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("4-bit QLoRA needs bitsandbytes: pip install 'localaug[gpu]'",
                            field="student.quantization") from None
    model = AutoModelForCausalLM.from_pretrained(model_dir, **model_load_kwargs(plan, for_training))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return model


class HFStudent:
    """A transformers causal LM plus LoRA adapters; implements `localaug.protocols.Student`."""

    def __init__(self, model_dir: Path, plan: StudentPlan, identity: str) -> None:
        self.model_dir = Path(model_dir)
        self.plan = plan
        self.identity = identity
        self.tokenizer = load_tokenizer(self.model_dir)
        self._model: Any = None  # the pristine base model (CPU: kept; 4-bit: reloaded for each training)
        self.last_eval_info: dict[str, Any] = {}

    # The base weights are never modified: LoRA layers are injected for a call and removed afterwards.
    def base_model(self) -> Any:
        if self._model is None:
            self._model = self._load_base()
        return self._model

    def _load_base(self) -> Any:
        return load_base_model(self.model_dir, self.plan)

    def _drop_model(self) -> None:
        self._model = None
        gc.collect()
        if self.plan.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def train(
        self, items: Sequence[TrainItem], out_dir: Path, seed: int, progress: ProgressFn | None = None
    ) -> TrainStats:
        from .train import train_adapter

        if not items:
            raise UserError("no training examples")
        if self.plan.distributed:
            from .distributed import train_in_workers

            if self.plan.device == "cuda":
                self._drop_model()  # the workers need the GPUs; evaluation reloads the model afterwards
            return train_in_workers(self.model_dir, self.plan, items, Path(out_dir), seed, progress)
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
        from .evaluate import evaluate_items, with_adapter

        if adapter_dir is not None:
            adapter_dir = Path(adapter_dir)
            if not (adapter_dir / "adapter_config.json").is_file():
                raise UserError(f"no LoRA adapter (adapter_config.json) in {adapter_dir}")
        model = self.base_model()
        with with_adapter(model, adapter_dir) as m:
            results, info = evaluate_items(m, self.tokenizer, items, self.plan, progress)
        self.last_eval_info = info
        return results
