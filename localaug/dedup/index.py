"""Exact and near-duplicate detection, plus a contamination guard against the test set.

LLM2LLM's reference code drops a generated example whose ROUGE-L against any existing example exceeds
0.95, comparing all pairs (quadratic). Here a candidate is

1. normalised (NFKC, case-folded, punctuation -> space, whitespace collapsed; digits optionally masked),
2. looked up exactly (a dict keyed by the normalised text: similarity 1.0),
3. otherwise sketched with MinHash over word or character n-grams and looked up in a `datasketch`
   MinHashLSH whose threshold sits below the confirmation threshold (so the LSH stage loses little),
4. and every LSH hit whose MinHash estimate is plausible is confirmed by the exact similarity:
   Jaccard of the shingle sets (default: word unigrams >= 0.7) or ROUGE-L F1 of the normalised
   tokens (`rule="rougeL"`: the paper's rule, > 0.95, strict like the paper).

The LSH is datasketch's MinHashLSH (its (bands, rows) optimiser and bucket storage); the signatures
are computed here, vectorised over a whole batch, with datasketch's legacy permutation family, and
the bucket keys are cut from one byte buffer per signature instead of one numpy call per band.

Two indexes share one `DedupIndex`: "train" items (seed, D_i, accepted candidates) for duplicates and
"test" items for contamination. Contamination is checked first and wins.

Numbers (GSM8K) -- decided, and configurable in `DedupConfig`:
* Among training data a problem that differs from another only in its numbers is NOT a duplicate
  (`numbers_must_match=True`: two texts whose digits differ are never duplicates). The LLM2LLM teacher
  is asked to write a new problem "with different names and numbers"; such a variant trains the same
  reasoning on new arithmetic; and the paper's own ROUGE-L rule keeps most of them (measured: ~80% of
  GSM8K numbers-only variants score ROUGE-L <= 0.95 -- e.g. 3 numbers in 40 tokens give 0.925), so
  keeping all of them is the paper's intent made consistent rather than length-dependent.
  `mask_digits=True` makes them duplicates instead.
* Against the TEST set they ARE contamination (`contamination_mask_digits=True`): the same problem with
  other numbers leaks the test problem into training. Measured on GSM8K: masking digits adds no
  spurious train/test matches at the default threshold (0.07% of 3,000 train questions match a test
  question either way; bench/README.md), so the stricter guard costs nothing.

Persistence is an `.npz` read with `allow_pickle=False`: ids, roles and normalised texts as JSON bytes,
MinHash signatures as a uint32 matrix; the LSH buckets are rebuilt on load. Written to a temp file and
renamed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasketch import MinHashLSH
from datasketch.lsh import _optimal_param

from ..errors import UserError

Role = Literal["train", "test"]
Outcome = Literal["accepted", "duplicate", "contaminated"]
FORMAT_VERSION = 1  # bump when normalisation, shingle hashing or permutations change: stored signatures
# are only comparable with signatures computed by the same code

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_CHUNK = 1 << 14  # shingles per vectorised MinHash step: bounds temp memory (16k x 128 x 8 B = 16 MB)


@dataclass(frozen=True)
class DedupConfig:
    """Settings; the defaults were chosen by `bench/dedup_bench.py tune` (see bench/README.md).

    threshold: a candidate is a duplicate when similarity >= threshold (Jaccard) or > threshold
        (ROUGE-L, as in the paper). None: 0.7 for Jaccard, 0.95 for ROUGE-L.
    shingle, ngram: word or character n-grams for MinHash and Jaccard. Word unigrams at 0.7 were best
        on short texts (SNIPS/TREC/SST-2: one changed word changes one shingle) and GSM8K alike.
    num_perm: MinHash size; 64 had the same recall as 128 at the default LSH threshold, at less cost.
    lsh_threshold: the MinHashLSH threshold. None, for Jaccard: 0.65 x threshold for train items (0.455:
        16 bands of 4 rows at 64 permutations; a pair at Jaccard 0.7 is missed with probability 1.2%,
        at 0.8 2e-4) and 0.5 x threshold for test items (0.35: 21 bands of 3; 1.5e-4 at 0.7, 3e-7 at
        0.8). LSH hits are then pre-filtered by the MinHash estimate (>= threshold - 0.25) and confirmed
        exactly. For ROUGE-L: 0.5 (ROUGE-L > 0.95 implies unigram Jaccard > ~0.9).
    mask_digits: mask digit runs for the duplicate check (default False: numbers-only variants kept).
    contamination_mask_digits: mask digits for the test-set check (default True: see module doc).
    contamination_threshold: None: same as threshold.
    numbers_must_match: in the duplicate check (not the contamination check) two texts whose numbers
        differ are never duplicates, however similar the words: a numbers-only variant is a new problem.
        Needs mask_digits=False to have any effect.
    """

    threshold: float | None = None
    shingle: Literal["word", "char"] = "word"
    ngram: int = 1
    num_perm: int = 64
    rule: Literal["jaccard", "rougeL"] = "jaccard"
    lsh_threshold: float | None = None
    mask_digits: bool = False
    contamination_mask_digits: bool = True
    contamination_threshold: float | None = None
    numbers_must_match: bool = True
    seed: int = 1

    def __post_init__(self) -> None:
        if self.rule not in ("jaccard", "rougeL"):
            raise UserError(f"dedup rule must be 'jaccard' or 'rougeL', not {self.rule!r}")
        if self.shingle not in ("word", "char"):
            raise UserError(f"dedup shingle must be 'word' or 'char', not {self.shingle!r}")
        if self.ngram < 1:
            raise UserError(f"dedup ngram must be >= 1, not {self.ngram}")
        if self.num_perm < 16:
            raise UserError(f"dedup num_perm must be >= 16, not {self.num_perm}")
        for name in ("threshold", "lsh_threshold", "contamination_threshold"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise UserError(f"dedup {name} must be in (0, 1], not {v}")

    @property
    def dup_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 0.95 if self.rule == "rougeL" else 0.7

    @property
    def test_threshold(self) -> float:
        return self.contamination_threshold if self.contamination_threshold is not None else self.dup_threshold

    def lsh_for(self, role: Role) -> float:
        if self.lsh_threshold is not None:
            return self.lsh_threshold
        if self.rule == "rougeL":
            return 0.5
        # test: looser (a missed leak costs a wrong accuracy figure; the test set is small, so the
        # extra LSH hits are few); train: tighter (short texts share many words: hits cost time)
        return max(0.1, (0.5 if role == "test" else 0.65) * self.threshold_for(role))

    def threshold_for(self, role: Role) -> float:
        return self.test_threshold if role == "test" else self.dup_threshold

    def prefilter_for(self, role: Role) -> float:
        """LSH hits whose MinHash-estimated Jaccard is below this are dropped before the exact check.
        Jaccard: threshold - 0.25 (4 standard deviations of the 64-permutation estimate at 0.7)."""
        return self.lsh_for(role) if self.rule == "rougeL" else max(0.0, self.threshold_for(role) - 0.25)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DedupConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown dedup settings: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    match_id: str | None  # the existing (train) or test id matched; None when accepted
    similarity: float  # of the match; when accepted, the best similarity seen among LSH hits


# --------------------------------------------------------------------------- text -> shingles

_EMPTY = np.uint64(1 << 40)  # outside crc32's range: marks an empty text in a batch


def _crc(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)  # everything but letters/digits -> one space
_DIGITS = re.compile(r"\d+")


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
        s = _DIGITS.sub("0", s)
    return " ".join(_PUNCT.sub(" ", s).split())


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


# --------------------------------------------------------------------------- MinHash


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Bulk inserts create hundreds of thousands of small sets (LSH buckets) and none of them is in a
    reference cycle; CPython's cyclic GC would still walk all of them over and over."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@functools.lru_cache(maxsize=32)
def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    # datasketch's own (bands, rows) choice; cached because it integrates numerically (~20 ms)
    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def _band_keys(lsh: MinHashLSH, sig: np.ndarray) -> list[bytes]:
    """The bucket keys `MinHashLSH.insert/query` would compute for `sig` (each band's hash values,
    byte-swapped, as bytes), cut from one buffer: ~20x cheaper than one numpy byteswap per band."""
    buf = sig.byteswap().tobytes()
    w = sig.itemsize
    return [buf[w * a : w * b] for a, b in lsh.hashranges]


def _lsh_insert(lsh: MinHashLSH, key: int, sig: np.ndarray) -> None:
    # MinHashLSH._insert without the per-band byteswap and without the key -> bands record (lsh.keys),
    # which only remove() needs: we never remove, and it would double the index's memory
    for h, table in zip(_band_keys(lsh, sig), lsh.hashtables, strict=True):
        table.insert(h, key)


def _lsh_query(lsh: MinHashLSH, sig: np.ndarray) -> set[int]:
    hits: set[int] = set()
    for h, table in zip(_band_keys(lsh, sig), lsh.hashtables, strict=True):
        hits.update(table.get(h))
    return hits


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    b = gen.randint(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    return a, b


def minhash_many(sets: Sequence[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(sets), num_perm) uint32 MinHash signatures, vectorised over all shingles at once.

    Same permutation family as datasketch's legacy MinHash: ((a*h + b) mod (2^61-1)) & (2^32-1).
    Every set must be non-empty; repeated shingles are harmless (a minimum is a minimum).
    """
    if not sets:
        return np.full((0, len(a)), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    lens = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    return _minhash_flat(np.concatenate(sets).astype(np.uint64), lens, a, b)


def _minhash_flat(flat: np.ndarray, lens: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sig = np.full((len(lens), len(a)), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    owner = np.repeat(np.arange(len(lens)), lens)
    for start in range(0, len(flat), _CHUNK):
        h = flat[start : start + _CHUNK]
        own = owner[start : start + _CHUNK]
        ph = ((h[:, None] * a[None, :] + b[None, :]) % _MERSENNE) & _MAX32
        # rows of one owner are contiguous: reduce each run, then merge into the owner's row
        cuts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
        mins = np.minimum.reduceat(ph, cuts, axis=0).astype(np.uint32)
        rows = own[cuts]
        sig[rows] = np.minimum(sig[rows], mins)
    return sig


# --------------------------------------------------------------------------- the index


class DedupIndex:
    """Train items (duplicates) and test items (contamination), each exact + MinHash-LSH indexed."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        c = self.config
        self._a, self._b = _permutations(c.num_perm, c.seed)
        self._lsh: dict[Role, MinHashLSH] = {
            role: MinHashLSH(num_perm=c.num_perm, params=_lsh_params(c.lsh_for(role), c.num_perm))
            for role in ("train", "test")
        }
        self._exact: dict[Role, dict[str, int]] = {"train": {}, "test": {}}
        self.ids: list[str] = []
        self.roles: list[Role] = []
        self.texts: list[str] = []  # normalised in the view of the item's role
        self._sig = np.zeros((0, self.config.num_perm), np.uint32)  # row-aligned; grows by doubling
        self._digits: list[str] = []  # digits of each normalised text, for numbers_must_match
        self._id_set: set[str] = set()
        self._tokcache: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def count(self, role: Role) -> int:
        return sum(1 for r in self.roles if r == role)

    # ----------------------------------------------------------------- views

    def _mask(self, role: Role) -> bool:
        return self.config.contamination_mask_digits if role == "test" else self.config.mask_digits

    def _shingles(self, norm: str) -> np.ndarray:
        if len(self._tokcache) > 1_000_000:  # bound the token-hash cache on very long-lived indexes
            self._tokcache.clear()
        return shingles(norm, self.config.shingle, self.config.ngram, self._tokcache)

    def _set(self, norm: str) -> set[Any]:
        return shingle_set(norm, self.config.shingle, self.config.ngram)

    def _similarity(self, norm_a: str, norm_b: str, sh_a: set[Any] | None = None) -> float:
        if self.config.rule == "rougeL":
            return rouge_l(norm_a.split(), norm_b.split())
        return jaccard(sh_a if sh_a is not None else self._set(norm_a), self._set(norm_b))

    def _passes(self, sim: float, threshold: float) -> bool:
        return sim > threshold if self.config.rule == "rougeL" else sim >= threshold

    def _checks_numbers(self, role: Role) -> bool:
        # digits are compared joined: "1,200" and "1200" (normalised "1 200" / "1200") are one number
        return role == "train" and self.config.numbers_must_match and not self._mask(role)

    # ----------------------------------------------------------------- building

    def add(self, id: str, text: Any, role: Role = "train") -> None:
        self.add_many([(id, text)], role=role)

    def add_many(self, items: Iterable[tuple[str, Any]], role: Role = "train") -> None:
        """Bulk insert: signatures computed in one vectorised pass, then inserted into the LSH."""
        if role not in ("train", "test"):
            raise UserError(f"dedup role must be 'train' or 'test', not {role!r}")
        mask = self._mask(role)
        pairs = [(str(i), t) for i, t in items]
        ids = [i for i, _ in pairs]
        self._claim(ids)
        with _no_gc():
            norms = [normalise(t, mask) for _, t in pairs]
            self._insert(ids, [role] * len(ids), norms, self._sketch(norms))

    def _claim(self, ids: list[str]) -> None:
        """Reserve new ids; all or none (an error leaves the index as it was)."""
        new = set(ids)
        clash = (new & self._id_set) or (len(new) < len(ids) and {i for i in ids if ids.count(i) > 1})
        if clash:
            raise UserError(f"duplicate id in dedup index: {sorted(clash)[0]!r}")
        self._id_set |= new

    def _insert(self, ids: list[str], roles: list[Role], norms: list[str], sigs: np.ndarray) -> None:
        base = len(self.ids)
        self.ids.extend(ids)
        self.roles.extend(roles)
        self.texts.extend(norms)
        need = base + len(ids)
        if need > len(self._sig):
            grown = np.zeros((max(need, 2 * len(self._sig), 1024), self.config.num_perm), np.uint32)
            grown[:base] = self._sig[:base]
            self._sig = grown
        self._sig[base:need] = sigs
        self._digits.extend("".join(_DIGITS.findall(n)) for n in norms)
        for k, (role, norm) in enumerate(zip(roles, norms, strict=True)):
            self._exact[role].setdefault(norm, base + k)  # first id wins: reports point at the original
            _lsh_insert(self._lsh[role], base + k, sigs[k])

    # ----------------------------------------------------------------- checking

    def _best(self, role: Role, norm: str, sig: np.ndarray) -> tuple[int | None, float, bool]:
        """(row, similarity, passes) of the most similar `role` item; exact hits short-circuit."""
        threshold = self.config.threshold_for(role)
        row = self._exact[role].get(norm)
        if row is not None:  # equal normalised texts have equal numbers too
            return row, 1.0, True
        best_row, best_sim = None, 0.0
        hits = _lsh_query(self._lsh[role], sig)
        if hits:
            rows = np.sort(np.fromiter(hits, dtype=np.int64, count=len(hits)))  # ties: oldest row wins
            # one vectorised MinHash estimate drops most LSH hits before any exact comparison
            est = (self._sig[rows] == sig).mean(axis=1)
            rows = rows[est >= self.config.prefilter_for(role)]
            sh = self._set(norm) if self.config.rule == "jaccard" else None
            digits = "".join(_DIGITS.findall(norm)) if self._checks_numbers(role) else None
            for r in rows.tolist():
                if digits is not None and digits != self._digits[r]:
                    continue  # a numbers-only variant is a new problem, not a duplicate
                sim = self._similarity(norm, self.texts[r], sh)
                if sim > best_sim:
                    best_row, best_sim = r, sim
        return best_row, best_sim, best_row is not None and self._passes(best_sim, threshold)

    def _views(self, texts: Sequence[Any], need_train: bool = False) -> dict[Role, tuple[list[str], np.ndarray]]:
        """Normalised texts and signatures per role; a role's view is skipped when it has no items
        (and, for train, none will be added), so a test-free index sketches each candidate once."""
        out: dict[Role, tuple[list[str], np.ndarray]] = {}
        roles: list[Role] = sorted(("train", "test"), key=self._mask)  # unmasked first: see below
        for role in roles:
            if not self._exact[role] and not (role == "train" and need_train):
                out[role] = ([], np.zeros((0, self.config.num_perm), np.uint32))
                continue
            mask = self._mask(role)
            other = "train" if role == "test" else "test"
            if other in out and out[other][0] and self._mask(other) == mask:
                out[role] = out[other]  # same view: normalise and sketch once
                continue
            if other in out and out[other][0] and mask and not self._mask(other):
                # masking commutes with normalisation: mask the other view instead of starting again,
                # and re-sketch only the texts that have digits
                plain, plain_sigs = out[other]
                norms = [_DIGITS.sub("0", n) for n in plain]
                changed = [k for k, (m, n) in enumerate(zip(norms, plain, strict=True)) if m != n]
                sigs = plain_sigs.copy()
                if changed:
                    sigs[changed] = self._sketch([norms[k] for k in changed])
                out[role] = (norms, sigs)
                continue
            norms = [normalise(t, mask) for t in texts]
            out[role] = (norms, self._sketch(norms))
        return out

    def _sketch(self, norms: Sequence[str]) -> np.ndarray:
        """Signatures of normalised texts; word unigrams (the default) are hashed for the whole batch
        at once, other shingles text by text."""
        c = self.config
        if not (c.shingle == "word" and c.ngram == 1):
            return minhash_many([self._shingles(n) for n in norms], self._a, self._b)
        if len(self._tokcache) > 1_000_000:
            self._tokcache.clear()
        cache = self._tokcache
        toks = [n.split() or [None] for n in norms]  # None: the shared shingle of an empty text
        lens = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        units = np.fromiter(
            (_EMPTY if t is None else cache[t] if t in cache else cache.setdefault(t, _crc(t))
             for ts in toks for t in ts),
            dtype=np.uint64, count=int(lens.sum()),
        )
        # the same shingle hash as shingles(): mix(unit + n) for n = 1; the empty text's is fixed
        hashed = np.where(units == _EMPTY, _mix(np.array([_MIX1], np.uint64))[0],
                          _mix(units + np.uint64(1))).astype(np.uint64)
        return _minhash_flat(hashed, lens, self._a, self._b)

    def _verdict(self, views: dict[Role, tuple[list[str], np.ndarray]], k: int) -> Verdict:
        seen = 0.0
        test_norms, test_sigs = views["test"]
        if test_norms:
            row, sim, hit = self._best("test", test_norms[k], test_sigs[k])
            if hit:  # contamination wins over duplication
                return Verdict("contaminated", self.ids[row], sim)
            seen = sim
        train_norms, train_sigs = views["train"]
        if train_norms:
            row, sim, hit = self._best("train", train_norms[k], train_sigs[k])
            if hit:
                return Verdict("duplicate", self.ids[row], sim)
            seen = max(seen, sim)
        return Verdict("accepted", None, seen)

    def check(self, text: Any) -> Verdict:
        """The verdict for one candidate; the index is not changed."""
        return self._verdict(self._views([text]), 0)

    def check_many(self, texts: Sequence[Any]) -> list[Verdict]:
        """Verdicts for many candidates against the index as it is (no candidate sees another)."""
        views = self._views(texts)
        return [self._verdict(views, k) for k in range(len(texts))]

    def check_and_add(self, id: str, text: Any) -> Verdict:
        """Check one candidate; if accepted, add it as "train" so later candidates are checked against it."""
        return self.check_and_add_many([(id, text)])[0]

    def check_and_add_many(self, items: Iterable[tuple[str, Any]]) -> list[Verdict]:
        """Like check_and_add for each item in order (a batch's second near-copy is a duplicate of the
        first), with the sketching vectorised over the whole batch."""
        items = [(str(i), t) for i, t in items]
        self._claim([i for i, _ in items])  # checked up front; rejected ids are released below
        verdicts: list[Verdict] = []
        try:
            with _no_gc():
                views = self._views([t for _, t in items], need_train=True)
                train_norms, train_sigs = views["train"]
                for k, (id_, _) in enumerate(items):
                    v = self._verdict(views, k)
                    verdicts.append(v)
                    if v.outcome == "accepted":
                        self._insert([id_], ["train"], [train_norms[k]], train_sigs[k : k + 1])
                    else:
                        self._id_set.discard(id_)
        finally:  # on an error, release the ids not yet decided
            self._id_set.difference_update(i for i, _ in items[len(verdicts) :])
        return verdicts

    # ----------------------------------------------------------------- persistence

    def save(self, path: Path) -> None:
        """One .npz (no pickle), written to a temp name and renamed so a crash leaves the old file."""
        path = Path(path)
        meta = {
            "format": FORMAT_VERSION,
            "config": asdict(self.config),
            "ids": self.ids,
            "roles": self.roles,
            "texts": self.texts,
        }
        sigs = self._sig[: len(self.ids)]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
                    sigs=sigs,
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: Path) -> DedupIndex:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode("utf-8"))
                sigs = np.asarray(z["sigs"], dtype=np.uint32)
        except FileNotFoundError:
            raise UserError("dedup index not found", file=path) from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"not a dedup index ({e})", file=path) from None
        if meta.get("format") != FORMAT_VERSION:
            raise UserError(f"dedup index format {meta.get('format')} not supported", file=path)
        index = cls(DedupConfig.from_dict(meta["config"]))
        ids, roles, texts = meta["ids"], meta["roles"], meta["texts"]
        if not (len(ids) == len(roles) == len(texts) == len(sigs)) or sigs.shape[1:] != (index.config.num_perm,):
            raise UserError("dedup index is inconsistent (lengths differ)", file=path)
        index._id_set = set(ids)
        with _no_gc():
            index._insert(list(ids), list(roles), list(texts), sigs)
        return index
