"""Tiny random Hugging Face checkpoints for the GGUF conversion tests (tests/test_export_convert.py).

The Llama is bench/gpu_model.py's `tiny` shape with a byte-level BPE tokenizer trained on the demo's texts
(its word-level tokenizer has no llama.cpp counterpart); the Gemma 3 has the real Gemma tokenizer (from the
built-in student's converted folder). Weights are redrawn so that every part of the model matters: q and
k large enough that attention is far from uniform (a wrong rotary layout shows), norms away from their
init (a missing Gemma norm offset shows).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from localaug.cards import builtin_dir

BENCH = Path(__file__).resolve().parent.parent / "bench"
DEMO_TRAIN = builtin_dir("tasks") / "demo" / "train.jsonl"
if str(BENCH) not in sys.path:  # bench/ is a folder of scripts: gpu_model.py has the tiny Llama's shape
    sys.path.insert(0, str(BENCH))


def _redraw(model: torch.nn.Module, seed: int, norm_base: float) -> None:
    """Norms at `norm_base` (Llama multiplies by w: 1; Gemma by 1 + w: 0) plus noise; q, k large."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.5 if ("q_proj" in name or "k_proj" in name) else 0.3 if "norm" in name else 0.08
            p.copy_((norm_base if "norm" in name else 0.0) + torch.randn(p.shape, generator=g) * std)


def bpe_tokenizer(out: Path, size: int) -> None:
    """A GPT-2-style byte-level BPE tokenizer of `size` tokens (<unk> <s> </s> first, as in Llama 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for line in DEMO_TRAIN.read_text(encoding="utf-8").splitlines()]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=size, special_tokens=["<unk>", "<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(out)


def tiny_llama(out: Path) -> Path:
    """bench/gpu_model.py's tiny Llama (2 layers, 64 wide, 512 tokens) as a Hugging Face folder."""
    from gpu_model import llama_config
    from transformers import AutoModelForCausalLM

    config = llama_config("tiny")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config)
    _redraw(model, 0, norm_base=1.0)
    model.save_pretrained(out)
    bpe_tokenizer(out, config.vocab_size)
    return out


def tiny_gemma3(out: Path, tokenizer_dir: Path) -> Path:
    """A 2-layer, 64-wide Gemma 3 with the real Gemma tokenizer (262,144 tokens)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                              sliding_window=512, max_position_embeddings=2048, bos_token_id=2, eos_token_id=1,
                              pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config)
    _redraw(model, 1, norm_base=0.0)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out / name)
    return out
