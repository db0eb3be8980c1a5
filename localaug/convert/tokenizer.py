"""A GGUF's metadata besides the weights: the tokenizer and the rest of the key-value fields.

Two sources:
- a student whose weights came from a GGUF: every field of that GGUF is copied (its tokenizer is what
  llama.cpp already runs; the merged model has the same architecture and hyperparameters);
- a Hugging Face folder: the tokenizer is written from tokenizer.json through the gguf package's vocab
  classes, for the kinds llama.cpp runs: SentencePiece-style BPE with byte fallback (Llama 2, Gemma;
  written as llama.cpp's "llama" tokenizer) and byte-level BPE (GPT-2 style, Llama 3; "gpt2").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import UserError

# Fields the writer sets itself, or that describe the old file rather than the model.
_NOT_COPIED = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")

# The pre-tokenizer regexes llama.cpp knows by name (its llama-vocab.cpp), as tokenizer.json spells them.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def copy_gguf_metadata(source: Path, writer: Any) -> None:
    """Every key-value field of `source` except the file's own bookkeeping."""
    from gguf import GGUFValueType

    from .gguf_kv import read_fields

    for f in read_fields(source):
        if not f.key.startswith(_NOT_COPIED):
            sub = GGUFValueType(f.sub_type) if f.sub_type is not None else None
            writer.add_key_value(f.key, f.value, GGUFValueType(f.type), sub)


def _load_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError("GGUF conversion needs the tokenizer as tokenizer.json (a fast tokenizer); none found",
                        file=model_dir)
    return json.loads(path.read_text(encoding="utf-8"))


def _prepends_space(tj: dict[str, Any]) -> bool:
    """Whether the tokenizer puts '▁' before the text (Llama 2's SentencePiece does; Gemma's does not)."""
    parts = [tj.get("normalizer") or {}, tj.get("pre_tokenizer") or {}]
    flat: list[dict[str, Any]] = []
    for p in parts:
        flat += p.get("normalizers") or p.get("pretokenizers") or [p]
    for p in flat:
        if p.get("type") == "Prepend" and p.get("prepend") == "▁":
            return True
        if p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") in ("always", "first"):
            return True
    return False


def _bpe_pre(tj: dict[str, Any], where: Path) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenizer."""
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") or [pre]
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not regexes and byte_level and byte_level[0].get("use_regex", True):
        return "gpt-2"
    if regexes == [_LLAMA3_REGEX]:
        return "llama-bpe"
    if regexes == [_GPT2_REGEX]:
        return "gpt-2"
    raise UserError("GGUF conversion knows the GPT-2 and Llama 3 byte-level pre-tokenizers; this tokenizer.json "
                    "splits text another way", file=where / "tokenizer.json", field="pre_tokenizer")


def _spm_bpe_tokens(tj: dict[str, Any], model_dir: Path) -> tuple[list[bytes], list[float], list[int]]:
    """A SentencePiece BPE vocabulary (tokenizer.json with byte fallback), as llama.cpp's "llama" tokenizer
    stores it. Only the order of the scores matters to llama.cpp's merges, and a SentencePiece BPE model
    numbers its ordinary pieces by priority: the n-th ordinary piece gets score -n (as Gemma's own GGUF has)."""
    import gguf

    vocab: dict[str, int] = tj["model"]["vocab"]
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    unk = tj["model"].get("unk_token")
    size = max([*vocab.values(), *added]) + 1
    by_id = {i: s for s, i in vocab.items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    tokens, scores, types = [], [], []
    rank = 0
    for i in range(size):
        text = by_id.get(i, f"[PAD{i}]")
        if i in added:
            kind = gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
            score = -1000.0
        elif text == unk:
            kind, score = gguf.TokenType.UNKNOWN, -1000.0
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
            kind, score = gguf.TokenType.BYTE, -1000.0
        elif i not in by_id:
            kind, score = gguf.TokenType.UNUSED, -1000.0
        else:
            kind, score, rank = gguf.TokenType.NORMAL, float(-rank), rank + 1
        tokens.append(text.encode("utf-8"))
        scores.append(score)
        types.append(int(kind))
    return tokens, scores, types


def tokenizer_kind(model_dir: Path, tj: dict[str, Any] | None = None) -> str:
    """llama.cpp's name for the folder's tokenizer ("llama" or "gpt2"), or one line saying why there is none.
    `tj`: its tokenizer.json when already read (Gemma's is 30 MB of JSON)."""
    tj = tj if tj is not None else _load_tokenizer_json(model_dir)
    model = tj.get("model") or {}
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama"
    if model.get("type") == "BPE" and (tj.get("decoder") or {}).get("type") == "ByteLevel":
        _bpe_pre(tj, model_dir)
        return "gpt2"
    raise UserError("GGUF conversion supports BPE tokenizers (SentencePiece-style with byte fallback, or "
                    f"byte-level); this tokenizer.json holds a {model.get('type', 'unknown')} model",
                    file=model_dir / "tokenizer.json", field="model.type")


def write_hf_tokenizer(writer: Any, model_dir: Path, vocab_size: int) -> None:
    """The tokenizer of a Hugging Face folder, padded with unused tokens to the model's `vocab_size`."""
    import gguf

    tj = _load_tokenizer_json(model_dir)
    kind = tokenizer_kind(model_dir, tj)
    if kind == "llama":
        tokens, scores, types = _spm_bpe_tokens(tj, model_dir)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_add_space_prefix(_prepends_space(tj))
        merges = False
    else:
        bpe = gguf.vocab.BpeVocab(model_dir)
        tokens, scores, types = [], [], []
        for text, score, kind in bpe.all_tokens():
            tokens.append(text if isinstance(text, bytes) else str(text).encode("utf-8"))
            scores.append(score)
            types.append(int(kind))
        specials = {t["content"] for t in tj.get("added_tokens", []) if t.get("special")}
        types = [int(gguf.TokenType.CONTROL) if t.decode("utf-8", "replace") in specials else k
                 for t, k in zip(tokens, types, strict=True)]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_bpe_pre(tj, model_dir))
        merges = True
    if len(tokens) > vocab_size:
        raise UserError(f"the tokenizer has {len(tokens)} tokens but the model only {vocab_size} embeddings",
                        file=model_dir / "tokenizer.json")
    for i in range(len(tokens), vocab_size):  # llama.cpp needs one token per embedding row
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=merges, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
