"""Our MinHash-LSH kernel vs datasketch's public API: the `public-api` subcommand of bench/dedup_bench.py
(figures in bench/README.md, section "Dedup", part 4).

    taskset -c 1 .venv/bin/python bench/dedup_bench.py public-api

localaug.dedup.minhash (vectorised signatures, band-key LSH insert/query) vs datasketch's public API
(MinHash.bulk, MinHashLSH.insert / insertion_session / query, LeanMinHash) on 20,000 SST-2 rows, same
permutations and LSH (bands, rows): identical signatures and hits are asserted, then timed. Kept apart
from dedup_bench.py to hold both under the project's module size; the rows come from its loader.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from localaug.dedup import DedupConfig, DedupIndex  # noqa: E402
from localaug.dedup import index as index_module  # noqa: E402
from localaug.dedup.minhash import lsh_insert, lsh_params, lsh_query, minhash_flat, new_lsh, permutations  # noqa: E402
from localaug.dedup.text import normalise, word_unigram_hashes  # noqa: E402


def _identity(v: Any) -> Any:
    return v  # shingles arrive hashed (our stable uint32 hashes): datasketch only permutes them


def _timed(fn: Any, repeats: int) -> tuple[float, float, Any]:
    """(best wall s, best CPU s, result) over `repeats` runs, GC off as in DedupIndex's bulk paths."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        gc.disable()
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        finally:
            gc.enable()
    return min(walls), min(cpus), out


def _public_sketch(norms: Sequence[str], a: np.ndarray, b: np.ndarray, num_perm: int,
                   cache: dict[str, int]) -> list[MinHash]:
    """MinHash.bulk over our shingle hashes with our permutations in datasketch's legacy scheme: the
    same signatures as minhash_flat, so the index format would not change."""
    flat, lens = word_unigram_hashes(norms, cache)
    sets = np.split(flat, np.cumsum(lens)[:-1])
    return MinHash.bulk(sets, num_perm=num_perm, scheme="legacy", permutations=(a, b), hashfunc=_identity)


def _lean(sig: np.ndarray, seed: int) -> LeanMinHash:
    return LeanMinHash(seed=seed, hashvalues=sig, scheme="legacy")


def public_api(rows: list[str], seed: int = 0, n_index: int = 10_000, n_cands: int = 10_000,
               repeats: int = 5) -> None:
    """`rows`: distinct SST-2 train rows (dedup_bench's `load("sst2", min_words=3)`), shuffled here in place. They
    are passed in, not loaded here, so that this module does not import dedup_bench (which dispatches to it)."""
    rng = random.Random(seed)
    rng.shuffle(rows)
    inorm = [normalise(t) for t in rows[:n_index]]
    cnorm = [normalise(t) for t in rows[n_index : n_index + n_cands]]
    cfg = DedupConfig()
    a, b = permutations(cfg.num_perm, cfg.seed)
    thr = cfg.lsh_for("train")
    params = lsh_params(thr, cfg.num_perm)

    def ours_sig(norms: Sequence[str]) -> np.ndarray:
        flat, lens = word_unigram_hashes(norms, {})
        return minhash_flat(flat, lens, a, b)

    def public_sig(norms: Sequence[str], cache: dict[str, int] | None = None) -> tuple[list[MinHash], np.ndarray]:
        mhs = _public_sketch(norms, a, b, cfg.num_perm, {} if cache is None else cache)
        return mhs, np.array([m.hashvalues for m in mhs], dtype=np.uint32)  # the index keeps the matrix

    def ours_insert(sigs: np.ndarray) -> MinHashLSH:
        lsh = new_lsh(thr, cfg.num_perm)
        for k in range(len(sigs)):
            lsh_insert(lsh, k, sigs[k])
        return lsh

    def public_insert(mhs: Sequence[MinHash], session: bool) -> MinHashLSH:
        lsh = MinHashLSH(num_perm=cfg.num_perm, params=params)
        if session:
            with lsh.insertion_session() as ses:
                for k, m in enumerate(mhs):
                    ses.insert(k, m)
        else:
            for k, m in enumerate(mhs):
                lsh.insert(k, m)
        return lsh

    t: dict[str, tuple[float, float]] = {}

    def run(label: str, fn: Any) -> Any:
        wall, cpu, out = _timed(fn, repeats)
        t[label] = (wall, cpu)
        return out

    isig = run("ours: signatures, index", lambda: ours_sig(inorm))
    csig = run("ours: signatures, candidates", lambda: ours_sig(cnorm))
    lsh = run("ours: LSH insert", lambda: ours_insert(isig))
    hits = run("ours: LSH query", lambda: [lsh_query(lsh, s) for s in csig])
    imh, isig_p = run("public: signatures, index (MinHash.bulk)", lambda: public_sig(inorm))
    cmh, csig_p = run("public: signatures, candidates (MinHash.bulk)", lambda: public_sig(cnorm))
    plsh = run("public: LSH insert (MinHashLSH.insert)", lambda: public_insert(imh, session=False))
    slsh = run("public: LSH insert (insertion_session)", lambda: public_insert(imh, session=True))
    phits = run("public: LSH query (MinHashLSH.query)", lambda: [plsh.query(m) for m in cmh])
    # the load path: .npz signature rows wrapped as LeanMinHash, then inserted
    llsh = run("public: LSH insert from stored rows (LeanMinHash + insert)",
               lambda: public_insert([_lean(s, cfg.seed) for s in isig], session=False))
    run("public, datasketch defaults (sha1, affine32; not our format): signatures, index",
        lambda: MinHash.bulk([[w.encode("utf-8") for w in n.split()] for n in inorm], num_perm=cfg.num_perm))
    # the same work: identical signatures, identical LSH hits
    assert np.array_equal(isig, isig_p) and np.array_equal(csig, csig_p)
    assert all(h == set(p) for h, p in zip(hits, phits, strict=True))
    assert all(h == set(x.query(m)) == set(y.query(m))
               for h, m in zip(hits, cmh, strict=True) for x, y in [(slsh, llsh)])

    # the whole index: DedupIndex.add_many + check_many, ours vs the public API patched in
    def dedup_run() -> list[Any]:
        idx = DedupIndex(cfg)
        idx.add_many((f"i{k}", n) for k, n in enumerate(inorm))
        return idx.check_many(cnorm)

    def public_dedup_run() -> list[Any]:
        def lsh(thr_: float, n: int) -> MinHashLSH:
            return MinHashLSH(num_perm=n, params=lsh_params(thr_, n))

        with mock.patch.object(DedupIndex, "_sketch", lambda self, norms: public_sig(norms, self._tokcache)[1]), \
             mock.patch.object(index_module, "new_lsh", lsh), \
             mock.patch.object(index_module, "lsh_insert", lambda h, key, sig: h.insert(key, _lean(sig, cfg.seed))), \
             mock.patch.object(index_module, "lsh_query", lambda h, sig: set(h.query(_lean(sig, cfg.seed)))):
            return dedup_run()

    verdicts = run("ours: DedupIndex add_many + check_many", dedup_run)
    pverdicts = run("public: DedupIndex add_many + check_many", public_dedup_run)
    assert verdicts == pverdicts

    n_hits = sum(len(h) for h in hits)
    print(f"public-api: SST-2, {len(inorm):,} indexed + {len(cnorm):,} candidate rows, num_perm {cfg.num_perm}, "
          f"LSH threshold {thr:.3f} = {params[0]} bands x {params[1]} rows, {n_hits:,} LSH hits; best of {repeats}; "
          "signatures and hits asserted identical")
    print("| step | wall s | CPU s |\n|---|---:|---:|")
    for label, (wall, cpu) in t.items():
        print(f"| {label} | {wall:.3f} | {cpu:.3f} |")

    def ratio(pub: Sequence[str], ours: Sequence[str]) -> str:
        w = sum(t[k][0] for k in pub) / sum(t[k][0] for k in ours)
        c = sum(t[k][1] for k in pub) / sum(t[k][1] for k in ours)
        return f"{w:.1f}x wall / {c:.1f}x CPU"

    sig_o, sig_p = ["ours: signatures, index", "ours: signatures, candidates"], [
        "public: signatures, index (MinHash.bulk)", "public: signatures, candidates (MinHash.bulk)"]
    print("public API slower than ours by:")
    print(f"  signatures (MinHash.bulk): {ratio(sig_p, sig_o)}")
    print(f"  LSH insert (insert): {ratio(['public: LSH insert (MinHashLSH.insert)'], ['ours: LSH insert'])}; "
          f"(insertion_session): {ratio(['public: LSH insert (insertion_session)'], ['ours: LSH insert'])}")
    print(f"  LSH query: {ratio(['public: LSH query (MinHashLSH.query)'], ['ours: LSH query'])}")
    kernel_o = [*sig_o, "ours: LSH insert", "ours: LSH query"]
    kernel_p = [*sig_p, "public: LSH insert (insertion_session)", "public: LSH query (MinHashLSH.query)"]
    print(f"  kernel (signatures + insert + query): {ratio(kernel_p, kernel_o)}")
    whole = ratio(["public: DedupIndex add_many + check_many"], ["ours: DedupIndex add_many + check_many"])
    print(f"  DedupIndex add_many + check_many: {whole}")
