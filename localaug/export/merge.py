"""The student's adapter merged into its base weights (peft's merge_and_unload), and the `hf` folder.

The base is loaded in the dtype its config.json names (the built-in student's converted copy: fp32, the
exact dequantised GGUF values), never 4-bit: merging into quantised weights would round the adapter away.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .source import ExportSource


def merged_model(src: ExportSource) -> Any:
    """The base model with the adapter merged in (a plain transformers model, no LoRA layers left)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(src.base_dir, dtype="auto")
    model = PeftModel.from_pretrained(base, str(src.adapter_dir), is_trainable=False)
    merged = model.merge_and_unload()
    merged.eval()
    return merged


def write_hf(src: ExportSource, model: Any, out: Path) -> list[str]:
    """safetensors weights, tokenizer, generation config, and the adapter itself (adapter/) into `out`."""
    from transformers import AutoTokenizer, GenerationConfig

    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(src.base_dir).save_pretrained(out)
    try:
        gen = GenerationConfig.from_pretrained(src.base_dir)
    except OSError:  # the base folder has none: the model's defaults
        gen = GenerationConfig.from_model_config(model.config)
    gen.save_pretrained(out)
    shutil.copytree(src.adapter_dir, out / "adapter")
    return sorted(p.name for p in out.iterdir())
