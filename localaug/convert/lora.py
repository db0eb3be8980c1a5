"""A peft LoRA adapter as a llama.cpp LoRA adapter (`llama-cli -m base.gguf --lora adapter.gguf`).

llama.cpp's adapter format (what its convert_lora_to_gguf.py writes): general.type "adapter", adapter.type
"lora", adapter.lora.alpha, and for each adapted weight `<gguf name>.lora_a` (r x in) and `.lora_b`
(out x r) as stored by peft. llama.cpp scales the product by alpha / r, as peft does (rsLoRA's alpha / sqrt(r)
is written as alpha * sqrt(r)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .arch import arch_for, gguf_name, lora_b_to_gguf_layout
from .gguf_model import read_config, save

_PEFT_PREFIX = "base_model.model."


def read_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config.json, tensors by name) of a peft LoRA adapter folder."""
    from safetensors.numpy import load_file

    cfg_path = adapter_dir / "adapter_config.json"
    weights = adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise UserError("not a LoRA adapter folder (adapter_config.json and adapter_model.safetensors)",
                        file=adapter_dir)
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora"):
        raise UserError("llama.cpp takes plain LoRA adapters (not DoRA or other peft types)", file=cfg_path)
    if cfg.get("modules_to_save") or cfg.get("bias", "none") != "none":
        raise UserError("the adapter also trains whole modules or biases, which a llama.cpp LoRA cannot hold",
                        file=cfg_path, field="modules_to_save")
    tensors = load_file(str(weights))
    if any("lora_embedding" in k for k in tensors):
        raise UserError("the adapter adapts an embedding layer, which localaug does not convert", file=weights)
    return cfg, tensors


def _alpha(cfg: dict[str, Any], r: int) -> float:
    alpha = float(cfg.get("lora_alpha", r))
    if cfg.get("alpha_pattern") or cfg.get("rank_pattern"):
        raise UserError("per-module ranks or alphas (rank_pattern, alpha_pattern) are not supported",
                        field="rank_pattern")
    return alpha * math.sqrt(r) if cfg.get("use_rslora") else alpha


def lora_pairs(adapter_dir: Path, model_dir: Path) -> tuple[Any, float, list[tuple[str, np.ndarray, np.ndarray]]]:
    """(arch, alpha, [(GGUF base weight name, A, B in llama.cpp's layout)]) of an adapter for `model_dir`."""
    config = read_config(model_dir)
    arch = arch_for(config, model_dir / "config.json")
    cfg, tensors = read_adapter(adapter_dir)
    pairs = []
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key[: -len(".lora_A.weight")]
        b = tensors.get(module + ".lora_B.weight")
        if b is None:
            raise UserError(f"'{module}' has lora_A but no lora_B", file=adapter_dir / "adapter_model.safetensors")
        hf_name = module.removeprefix(_PEFT_PREFIX) + ".weight"
        name = gguf_name(arch, config, hf_name)
        if name is None:
            raise UserError(f"the gguf package's {arch.name} tensor map has no name for '{hf_name}'",
                            file=adapter_dir)
        a = tensors[key].astype(np.float32)
        pairs.append((name, a, lora_b_to_gguf_layout(arch, config, name, b.astype(np.float32))))
    if not pairs:
        raise UserError("the adapter holds no LoRA weights", file=adapter_dir)
    return arch, _alpha(cfg, int(cfg["r"])), pairs


def write_lora_gguf(adapter_dir: Path, model_dir: Path, out: Path, *, dtype: str = "f32") -> Path:
    """Convert the peft adapter in `adapter_dir` (trained on the model in `model_dir`) to `out`.

    dtype "f32" keeps the trained values exactly; "f16" (llama.cpp's converter's default) halves the size."""
    import gguf

    arch, alpha, pairs = lora_pairs(Path(adapter_dir), Path(model_dir))
    np_dtype = {"f16": np.float16, "f32": np.float32}[dtype]
    writer = gguf.GGUFWriter(path=None, arch=arch.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, a, b in pairs:
        base = name.removesuffix(".weight")
        writer.add_tensor(f"{base}.weight.lora_a", a.astype(np_dtype))
        writer.add_tensor(f"{base}.weight.lora_b", b.astype(np_dtype))
    return save(writer, Path(out))
