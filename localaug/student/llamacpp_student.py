"""`eval_backend: llamacpp`: the student trains with transformers + peft and is evaluated in llama.cpp.

Before each evaluation the adapter the training stage wrote is converted to a llama.cpp LoRA (f32, the
trained values exactly; a few MB, under a second) and applied to the student's base GGUF: the card's own
GGUF for the built-in student (the very weights transformers dequantised), or, for a student from a Hugging
Face folder, an f16 GGUF converted from it once into localaug's cache folder. Tokens come from the
student's Hugging Face tokenizer, so llama.cpp sees the ids the adapter was trained on.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import base_sha256, cache_dir
from ..protocols import EvalItem, EvalResult, ProgressFn, TrainItem, TrainStats
from .hf import HFStudent
from .llamacpp import LlamaCppEvaluator


def base_gguf(model_dir: Path, kind: str = "gguf") -> Path:
    """The GGUF holding the student's base weights: the one they came from (kind "gguf"), or an f16 copy of
    the weights transformers loads (kind "f16", and always for a student from a Hugging Face folder), made
    once into the cache folder."""
    source = model_dir / "localaug_source.json"  # written by weights.py for a student from a GGUF
    origin = Path(json.loads(source.read_text())["gguf"]) if source.is_file() else None
    if origin is not None and not origin.is_file():
        raise UserError("the student's GGUF is gone; run `localaug prepare` again", file=origin)
    if origin is not None and kind == "gguf":
        return origin
    from ..convert.gguf_model import write_gguf

    # A GGUF student's converted folder is already named by its GGUF's hash; a Hugging Face folder is not.
    tag = model_dir.name if origin is not None else f"{model_dir.name}-{base_sha256(model_dir, None)[:16]}"
    out = cache_dir() / "models" / f"{tag}-f16.gguf"
    if not out.is_file():
        write_gguf(out, model_dir, hf_tensors(model_dir), base_gguf=origin)
    return out


def hf_tensors(model_dir: Path) -> Any:
    from safetensors import safe_open

    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                yield name, f.get_tensor(name)


class LlamaCppEvalStudent:
    """Implements `localaug.protocols.Student`: training by `inner`, evaluation in llama.cpp."""

    def __init__(self, inner: HFStudent, n_threads: int | None = None, base: str = "gguf") -> None:
        self.inner = inner
        self.identity = inner.identity + " eval:llama.cpp" + ("" if base == "gguf" else f"-{base}")
        self.n_threads = n_threads
        self.base = base  # "gguf": the student's own GGUF; "f16": an f16 GGUF of the weights it trains on
        self._evaluator: LlamaCppEvaluator | None = None
        self.last_eval_info: dict[str, Any] = {}

    def evaluator(self) -> LlamaCppEvaluator:
        if self._evaluator is None:
            self._evaluator = LlamaCppEvaluator(base_gguf(self.inner.model_dir, self.base), n_threads=self.n_threads,
                                                batch_sequences=self.inner.plan.eval_batch_size)
        return self._evaluator

    def _tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self.inner.tokenizer(text, add_special_tokens=add_bos)["input_ids"]

    def train(self, items: Sequence[TrainItem], out_dir: Path, seed: int, progress: ProgressFn | None = None
              ) -> TrainStats:
        return self.inner.train(items, out_dir, seed, progress)

    def evaluate(self, adapter_dir: Path | None, items: Sequence[EvalItem], progress: ProgressFn | None = None
                 ) -> list[EvalResult]:
        from ..convert.lora import write_lora_gguf

        ev = self.evaluator()
        with tempfile.TemporaryDirectory(prefix="localaug-lora-") as tmp:
            lora = None
            if adapter_dir is not None:
                lora = write_lora_gguf(Path(adapter_dir), self.inner.model_dir, Path(tmp) / "adapter.gguf",
                                       dtype="f32")
            results = ev.evaluate(items, self._tokenize, lora, progress, cap=self.inner.plan.max_new_tokens)
        self.last_eval_info = ev.last_info
        return results
