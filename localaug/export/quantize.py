"""Quantisation by llama.cpp's own quantiser (`llama_model_quantize`, what `llama-quantize` runs).

localaug writes the f16 GGUF; every lower precision is llama.cpp's choice of kernels and per-tensor types
(q4_k_m keeps some tensors at higher precision, and picks a fallback for rows its block size does not
divide), never code of ours.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cores import usable_cores
from ..errors import UserError

# --quant names -> llama_ftype (llama.h): the llama-quantize names, lower-cased.
FTYPES = {"f16": "LLAMA_FTYPE_MOSTLY_F16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def quantize(src: Path, dst: Path, quant: str, n_threads: int | None = None) -> Path:
    """`src` (an f16 GGUF) quantised to `quant` at `dst` (through a temp name next to it)."""
    import llama_cpp

    if quant not in FTYPES:
        raise UserError(f"unknown quantisation '{quant}' (one of {', '.join(FTYPES)})", field="quant")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant])
    params.nthread = int(n_threads or usable_cores())
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        from ..student.llamacpp import quiet_llama

        with quiet_llama():  # a line per tensor otherwise
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0 or not tmp.is_file():
            raise UserError(f"llama.cpp could not quantise {src.name} to {quant} (code {rc})", file=src)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
