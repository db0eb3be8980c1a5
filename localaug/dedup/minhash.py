"""The MinHash-LSH kernel: signatures vectorised over a whole batch, and LSH insert/query by band keys.

The LSH is datasketch's MinHashLSH (its (bands, rows) optimiser and bucket storage). The signatures use
datasketch's "legacy" permutation family, ((a*h + b) mod (2^61-1)) & (2^32-1), with our own (a, b);
band keys are cut from one byte buffer per signature instead of one numpy call per band.

This is the only module that touches datasketch internals (`datasketch.lsh._optimal_param`, and
MinHashLSH's `hashranges` / `hashtables` and the byte-swapped band-key layout of its `_insert`);
pyproject pins datasketch 2.x for them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import MinHashLSH

# Own kernel, not datasketch's public API: `dedup_bench.py public-api` measured it 2.0-2.1x slower (whole index 1.7x).

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
_CHUNK = 1 << 14  # shingles per vectorised MinHash step: bounds temp memory (16k x 128 x 8 B = 16 MB)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of each permutation; stored signatures depend on them (persist.FORMAT_VERSION)."""
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
    return minhash_flat(np.concatenate(sets).astype(np.uint64), lens, a, b)


def minhash_flat(flat: np.ndarray, lens: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures of len(lens) sets given as one flat uint64 array of shingle hashes, lens[i] per set."""
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


@functools.lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    # datasketch's own (bands, rows) choice; cached because it integrates numerically (~20 ms)
    from datasketch.lsh import _optimal_param  # internal: datasketch's own (bands, rows) choice

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def new_lsh(threshold: float, num_perm: int) -> MinHashLSH:
    # Imported here, not at the top: datasketch pulls in scipy (~1-2 s), which every `localaug` command would
    # pay at start-up, also the ones that never deduplicate (--help, data check, a refused input).
    from datasketch import MinHashLSH

    return MinHashLSH(num_perm=num_perm, params=lsh_params(threshold, num_perm))


def band_keys(lsh: MinHashLSH, sig: np.ndarray) -> list[bytes]:
    """The bucket keys `MinHashLSH.insert/query` would compute for `sig` (each band's hash values,
    byte-swapped, as bytes), cut from one buffer: ~20x cheaper than one numpy byteswap per band."""
    buf = sig.byteswap().tobytes()
    w = sig.itemsize
    return [buf[w * a : w * b] for a, b in lsh.hashranges]


def lsh_insert(lsh: MinHashLSH, key: int, sig: np.ndarray) -> None:
    # MinHashLSH._insert without the per-band byteswap and without the key -> bands record (lsh.keys),
    # which only remove() needs: we never remove, and it would double the index's memory
    for h, table in zip(band_keys(lsh, sig), lsh.hashtables, strict=True):
        table.insert(h, key)


def lsh_query(lsh: MinHashLSH, sig: np.ndarray) -> set[int]:
    hits: set[int] = set()
    for h, table in zip(band_keys(lsh, sig), lsh.hashtables, strict=True):
        hits.update(table.get(h))
    return hits
