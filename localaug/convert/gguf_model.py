"""A whole model as one f16 GGUF (llama.cpp's own quantiser makes q8_0 / q4_k_m from it: export/quantize.py).

Like convert_hf_to_gguf.py's f16 output: matrices in f16, vectors (norms) in f32. The tensor names and
layouts come from arch.py, the tokenizer and other fields from tokenizer.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .arch import Arch, arch_for, gguf_name, to_gguf_layout, write_hparams
from .tokenizer import copy_gguf_metadata, tokenizer_kind, write_hf_tokenizer


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise UserError("no config.json", file=model_dir)
    return json.loads(path.read_text(encoding="utf-8"))


def _tensors(arch: Arch, config: dict[str, Any], state: Iterable[tuple[str, Any]], where: Path
             ) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every weight; a tied output layer is left out (llama.cpp reuses token_embd)."""
    tied = bool(config.get("tie_word_embeddings", False))
    out = []
    for hf_name, t in state:
        if tied and hf_name == "lm_head.weight":
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):  # recomputed by llama.cpp
            continue
        name = gguf_name(arch, config, hf_name)
        if name is None:
            raise UserError(f"the gguf package's {arch.name} tensor map has no name for '{hf_name}'", file=where)
        w = t.float().numpy() if hasattr(t, "float") else np.asarray(t, dtype=np.float32)
        w = to_gguf_layout(arch, config, name, w)
        out.append((name, w.astype(np.float16 if w.ndim >= 2 else np.float32)))
    return out


def check_convertible(model_dir: Path, with_tokenizer: bool) -> None:
    """Fail now, in one line, for a model this converter cannot write (before minutes of merging)."""
    arch_for(read_config(model_dir), model_dir / "config.json")
    if with_tokenizer:
        tokenizer_kind(model_dir)


def save(writer: Any, out: Path) -> Path:
    """Write a filled GGUFWriter to `out` through a temp name in the same folder (never seen half-written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_gguf(out: Path, model_dir: Path, state: Iterable[tuple[str, Any]], *, base_gguf: Path | None = None
               ) -> Path:
    """Write the model (`state`: Hugging Face names and tensors, the layout of `model_dir`) to `out` as f16.

    With `base_gguf` (the student's weights came from it) its metadata and tokenizer are copied; otherwise
    they are written from `model_dir`'s config.json and tokenizer.json."""
    import gguf

    config = read_config(model_dir)
    arch = arch_for(config, model_dir / "config.json")
    writer = gguf.GGUFWriter(path=None, arch=arch.name)
    if base_gguf is not None:
        copy_gguf_metadata(base_gguf, writer)
    else:
        writer.add_type(gguf.GGUFType.MODEL)
        write_hparams(writer, arch, config, model_dir / "config.json")
        write_hf_tokenizer(writer, model_dir, int(config["vocab_size"]))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, w in _tensors(arch, config, state, model_dir):
        writer.add_tensor(name, w)
    return save(writer, out)
