"""Text side of dedup: normalisation, shingle hashing, and the exact similarities that confirm LSH hits.

A text is normalised (NFKC, case-folded, punctuation -> space, whitespace collapsed; digits optionally
masked), cut into word or character n-grams, and each n-gram hashed to a uint32 that is stable across
processes and runs (crc32 of the unit, mixed): stored signatures depend on these hashes, so any change
here needs a new `persist.FORMAT_VERSION`.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_EMPTY = np.uint64(1 << 40)  # outside crc32's range: marks an empty text in a batch

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)  # everything but letters/digits -> one space
DIGITS = re.compile(r"\d+")


def as_text(value: Any) -> str:
    """Any field value as text: str as is, None -> "", containers as canonical JSON, else str()."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def normalise(text: Any, mask_digits: bool = False) -> str:
    """Case, width, accents-as-composed, punctuation and whitespace folded; digit runs -> '0' if asked."""
    s = unicodedata.normalize("NFKC", as_text(text)).casefold()
    if mask_digits:
        # "$1,200.50" -> "0 0 0": the number's shape survives, its value does not
        s = DIGITS.sub("0", s)
    return " ".join(_PUNCT.sub(" ", s).split())


def _crc(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


def _mix(x: np.ndarray) -> np.ndarray:
    """64-bit finaliser (splitmix64 style) -> well-spread uint32; stable across processes and runs."""
    x = x ^ (x >> np.uint64(31))
    x = x * _MIX2
    x = x ^ (x >> np.uint64(29))
    return (x >> np.uint64(32)).astype(np.uint32)


def shingles(norm: str, shingle: str = "word", ngram: int = 1, _cache: dict[str, int] | None = None) -> np.ndarray:
    """Sorted unique uint32 hashes of the word or character n-grams of a normalised text.

    Texts shorter than n give one shingle (the whole text), so even "" has a (shared) shingle.
    """
    if shingle == "word":
        toks = norm.split()
        cache = _cache if _cache is not None else {}
        units = np.fromiter(
            (cache[t] if t in cache else cache.setdefault(t, zlib.crc32(t.encode("utf-8"))) for t in toks),
            dtype=np.uint64,
            count=len(toks),
        )
    else:
        units = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(units) == 0:
        return _mix(np.array([_MIX1], dtype=np.uint64))
    n = min(ngram, len(units))
    m = len(units) - n + 1
    x = units[:m].copy()
    for j in range(1, n):  # polynomial combine of the n units, wrapping in uint64
        x = x * _MIX1 + units[j : j + m]
    x = x + np.uint64(n)  # so a 1-word text and a 1-gram of a longer text differ only when n > 1
    return np.unique(_mix(x))


def word_unigram_hashes(norms: Sequence[str], cache: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The word-unigram shingle hashes of a whole batch at once: (flat uint64 hashes, count per text).

    The same hashes as `shingles(n)` per text (mix(crc + 1); the empty text's one shingle is fixed),
    without a numpy call per text; repeated words are left in (a minimum is a minimum)."""
    toks = [n.split() or [None] for n in norms]  # None: the shared shingle of an empty text
    lens = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
    units = np.fromiter(
        (_EMPTY if t is None else cache[t] if t in cache else cache.setdefault(t, _crc(t))
         for ts in toks for t in ts),
        dtype=np.uint64, count=int(lens.sum()),
    )
    hashed = np.where(units == _EMPTY, _mix(np.array([_MIX1], np.uint64))[0],
                      _mix(units + np.uint64(1))).astype(np.uint64)
    return hashed, lens


def shingle_set(norm: str, shingle: str = "word", ngram: int = 1) -> set[Any]:
    """The same n-grams as `shingles`, unhashed: exact Jaccard for confirming LSH hits (no numpy
    overhead per pair, and no hash collisions)."""
    units: Sequence[str] = norm.split() if shingle == "word" else norm
    if ngram == 1:
        return set(units) or {()}  # (): the one shingle every empty text shares
    if len(units) < ngram:
        return {tuple(units)}
    return set(zip(*(units[j:] for j in range(ngram)), strict=False))


def jaccard(a: set[Any], b: set[Any]) -> float:
    inter = len(a & b)
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence of two token lists, bit-parallel (Allison-Dix/Hyyroe): O(|a|*|b|/w)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 (beta=1) of two token lists: 2*LCS / (|a| + |b|), as rouge-score computes it."""
    if not a or not b:
        return 0.0
    return 2.0 * lcs_length(a, b) / (len(a) + len(b))
