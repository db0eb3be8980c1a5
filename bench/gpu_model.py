"""The random Llama-shaped checkpoint and its tokenizer for bench/gpu_check.py (see its docstring and
bench/README.md, "GPU check"): the shapes, a word-level tokenizer of exactly the model's vocabulary, and a
bf16 safetensors checkpoint of random weights written tensor by tensor. Kept apart from gpu_check.py (the
check itself: workload, memory, report, CLI) to hold both under the project's module size.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    # Llama-2-7B (meta-llama/Llama-2-7b-hf config.json): 6.74 B parameters.
    "llama2-7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000},
    # Small enough for CI on 2 CPU cores (a step in ~4 s); 64 wide: bitsandbytes quantises blocks of 64 values.
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 512},
}
N_SPECIAL = 3  # <unk> <s> </s>, ids 0 1 2 as in Llama-2's tokenizer
GIB = 1024**3


def llama_config(shape: str) -> Any:
    import torch
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2, dtype=torch.bfloat16)


def write_tokenizer(out: Path, vocab_size: int) -> None:
    """A word-level tokenizer with exactly the model's vocabulary ("w3" ... "w<V-1>"), so every id the random model
    can emit decodes, and a text of n words is exactly n tokens (gpu_check's items reach the card's max length)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(N_SPECIAL, vocab_size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    # No pad token, like Llama-2's: the student falls back to EOS, as it would with the real tokenizer.
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(out)


def checkpoint_bytes(shape: str) -> int:
    """bf16 bytes of the shape's weights (embeddings, output layer, attention and MLP; the norms are noise)."""
    s = SHAPES[shape]
    h, n, i, v = s["hidden_size"], s["num_hidden_layers"], s["intermediate_size"], s["vocab_size"]
    kv = h * s["num_key_value_heads"] // s["num_attention_heads"]
    return 2 * (2 * v * h + n * (2 * h * h + 2 * h * kv + 3 * h * i))


def default_workdir(shape: str) -> Path:
    """A temp dir for the checkpoint: in /dev/shm when it has room (RAM: no disk write), else the temp dir."""
    need = checkpoint_bytes(shape) + 2 * GIB
    shm = Path("/dev/shm")
    try:
        roomy = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > need
    except OSError:
        roomy = False
    return Path(tempfile.mkdtemp(prefix="localaug-gpu-check-", dir=shm if roomy else None))


def write_random_checkpoint(config: Any, out: Path, device: str, seed: int, shard_gib: float) -> dict[str, Any]:
    """Write a bf16 safetensors checkpoint of random weights, tensor by tensor.

    The model is built on the meta device (names and shapes only, no memory), and each tensor is drawn where it is
    fastest (the GPU when there is one), so at most one shard (`shard_gib`) is ever held in CPU memory instead of
    the whole 13.5 GB model. Init as transformers does for Llama: normal(0, initializer_range), norms at one.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    del meta
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():  # plan the shards first: the index needs their count
        nbytes = math.prod(shape) * 2
        if shards[-1] and size + nbytes > shard_gib * GIB:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    total = 0
    for i, (fname, names) in enumerate(zip(files, shards, strict=True)):
        tensors = {}
        for j, name in enumerate(names):
            gen = torch.Generator(device=device).manual_seed(seed * 100003 + i * 1009 + j)
            t = torch.empty(shapes[name], dtype=torch.bfloat16, device=device)
            if name.endswith("norm.weight"):
                t.fill_(1.0)
            else:
                t.normal_(0.0, config.initializer_range, generator=gen)
            tensors[name] = t.cpu()
            total += tensors[name].numel() * 2
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    if len(files) > 1:
        weight_map = {n: f for f, names in zip(files, shards, strict=True) for n in names}
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.save_pretrained(out)
    write_tokenizer(out, config.vocab_size)
    return {"seconds": round(time.perf_counter() - t0, 1), "gb": round(total / 1e9, 3), "shards": len(files),
            "params": sum(math.prod(s) for s in shapes.values()), "drawn_on": device, "dir": str(out.parent)}
