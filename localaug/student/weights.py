"""Where the student's weights come from: a local Hugging Face folder, or a GGUF file that transformers
dequantises once into a safetensors copy in localaug's cache folder."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path

from ..files import atomic_dir, cache_dir, make_once, sha256_file
from ..modelcards import ModelCard, check_hf_dir


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """transformers reads a GGUF's metadata three times (tokenizer, config, weights); for Gemma's 262k-token
    vocabulary each read takes ~15 s on 2 cores. Inside this block the readers (read-only memory maps) are
    shared: 39 s instead of 64 s for the 270M student, the same tensors and tokenizer."""
    import gguf

    original = gguf.GGUFReader
    gguf.GGUFReader = functools.lru_cache(maxsize=2)(original)  # transformers imports it at call time
    try:
        yield
    finally:
        gguf.GGUFReader = original


@contextlib.contextmanager
def _no_conversion_bar() -> Iterator[None]:
    """transformers draws its own tqdm bar while it dequantises a GGUF ("Converting and de-quantizing GGUF
    tensors..."), outside its progress-bar switch (it imports tqdm itself): inside this block that bar is off,
    so `localaug prepare` and a first run print only their own lines."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def needs_conversion(gguf: Path, name: str = "model") -> bool:
    """Whether the first use of this GGUF student still has to make its safetensors copy."""
    return not (_converted_path(gguf, name) / "config.json").is_file()


def _converted_path(gguf: Path, name: str) -> Path:
    return cache_dir() / "models" / f"{name}-{sha256_file(gguf)[:16]}"


def converted_gguf_dir(gguf: Path, name: str = "model") -> Path:
    """A safetensors copy of a GGUF model, made once per GGUF hash (GGUF load ~40 s, this reload ~4 s)."""
    final = _converted_path(gguf, name)
    return make_once(final, lambda: (final / "config.json").is_file(), lambda: _convert(gguf, final))


def _convert(gguf: Path, final: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(final, replace=False) as tmp, _one_gguf_parse(), _no_conversion_bar():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers marks a GGUF-loaded model as quantised and refuses to save it; the weights are already
        # dequantised to fp32, so drop the marker (fp32 keeps the dequantised values exact).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "localaug_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": sha256_file(gguf)}))
        del model


def tokenizer_of(card: ModelCard) -> object:
    """The student's tokenizer alone, without converting or loading its weights (the pre-run length check):
    from the converted copy or the card's folder when there is one, else read from the GGUF itself."""
    from transformers import AutoTokenizer

    if card.source.hf_path is not None:
        return AutoTokenizer.from_pretrained(check_hf_dir(Path(card.source.hf_path).expanduser(), card))
    gguf = card.gguf_file()
    converted = _converted_path(gguf, card.name or "model")
    if (converted / "config.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    with _one_gguf_parse():
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def weights_dir(card: ModelCard) -> tuple[Path, str]:
    """(the folder transformers loads, the weights' identity for the manifest)."""
    if card.source.hf_path is not None:
        model_dir = check_hf_dir(Path(card.source.hf_path).expanduser(), card)
        return model_dir, f"{card.name} hf:{model_dir}"
    model_dir = converted_gguf_dir(card.gguf_file(), card.name or "model")
    src = json.loads((model_dir / "localaug_source.json").read_text())
    return model_dir, f"{card.name} gguf-sha256:{src['sha256'][:16]}"
