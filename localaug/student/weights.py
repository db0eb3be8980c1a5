"""Where the student's weights come from: a local Hugging Face folder, or a GGUF file that transformers
dequantises once into a safetensors copy in localaug's cache folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..files import atomic_dir, cache_dir, sha256_file
from ..modelcards import ModelCard


def converted_gguf_dir(gguf: Path, name: str = "model") -> Path:
    """A safetensors copy of a GGUF model, made once per GGUF hash (GGUF load ~50 s, this reload ~4 s)."""
    digest = sha256_file(gguf)
    final = cache_dir() / "models" / f"{name}-{digest[:16]}"
    if (final / "config.json").is_file():
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(final, replace=False) as tmp:  # another process may finish first: then theirs is kept
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
    return final


def check_hf_dir(p: Path, card: ModelCard | None = None) -> Path:
    where = card.path if card else None
    if not p.is_dir():
        raise UserError(f"model directory not found: {p}", file=where, field="source.hf_path")
    if not any(p.glob("*.safetensors")):
        raise UserError(f"no *.safetensors weights in {p}", file=where, field="source.hf_path")
    if not (p / "config.json").is_file():
        raise UserError(f"no config.json in {p}", file=where, field="source.hf_path")
    return p


def weights_dir(card: ModelCard) -> tuple[Path, str]:
    """(the folder transformers loads, the weights' identity for the manifest)."""
    if card.source.hf_path is not None:
        model_dir = check_hf_dir(Path(card.source.hf_path).expanduser(), card)
        return model_dir, f"{card.name} hf:{model_dir}"
    model_dir = converted_gguf_dir(card.gguf_file(), card.name or "model")
    src = json.loads((model_dir / "localaug_source.json").read_text())
    return model_dir, f"{card.name} gguf-sha256:{src['sha256'][:16]}"
