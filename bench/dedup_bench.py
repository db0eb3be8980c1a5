"""Benchmark for localaug.dedup.index (figures in bench/README.md, section "Dedup").

    taskset -c 0,1 .venv/bin/python bench/dedup_bench.py all        # tune + reference + scale + public-api
    .venv/bin/python bench/dedup_bench.py tune|reference|scale
    taskset -c 1 .venv/bin/python bench/dedup_bench.py public-api   # our kernel vs datasketch's public API

Data: real rows from $LOCALAUG_DATA_DIR (default ../shared/data next to the repo): SNIPS, TREC, SST-2 and GSM8K.
Planted near-duplicates of three kinds:
  case    -- case, punctuation and whitespace changed (exact after normalisation)
  words   -- a few words replaced by other words of the corpus (1 per 10 words, at least 1, at most 3)
  numbers -- every number replaced by another (only rows that contain a number)
Non-duplicates ("fresh") are other real rows whose normalised text differs from every indexed row.

reference: the paper's rule -- a candidate is dropped when ROUGE-L F1 vs any existing or earlier
accepted item > 0.95, all pairs -- with a bit-parallel LCS, on 2 worker processes, vs DedupIndex.
scale: 100,000 candidates against a 10,000-row index (check_and_add_many in batches of 1,000).
public-api (in bench/dedup_public_api.py): localaug.dedup.minhash (vectorised signatures, band-key LSH
insert/query) vs datasketch's public API (MinHash.bulk, MinHashLSH.insert / insertion_session / query,
LeanMinHash) on 20,000 SST-2 rows, same permutations and LSH (bands, rows): identical signatures and hits
are asserted, then timed.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import sys
import time
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from localaug.dedup import DedupConfig, DedupIndex  # noqa: E402
from localaug.dedup.text import normalise, rouge_l, shingles  # noqa: E402

# bench/ is a folder of scripts, not a package: the public-api comparison lives in a sibling module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_public_api import public_api  # noqa: E402

DATA = Path(os.environ.get("LOCALAUG_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
SOURCES = {  # file, text field
    "snips": ("snips/train.jsonl", "text"),
    "trec": ("trec/train.jsonl", "text"),
    "sst2": ("sst2/train.jsonl", "text"),
    "gsm8k": ("gsm8k/train.jsonl", "question"),
}
_NUM = re.compile(r"\d+")
_RTOK = re.compile(r"[^a-z0-9]+")


def load(name: str, min_words: int = 6) -> list[str]:
    """Distinct (after normalisation) rows with at least `min_words` words, in file order."""
    rel, field = SOURCES[name]
    out, seen = [], set()
    with open(DATA / rel, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)[field]
            n = normalise(t)
            if len(n.split()) >= min_words and n not in seen:
                seen.add(n)
                out.append(t)
    return out


# --------------------------------------------------------------------------- planting


def plant(text: str, kind: str, rng: random.Random, vocab: Sequence[str]) -> str:
    if kind == "case":
        words = text.split()
        words = [w.upper() if rng.random() < 0.3 else w.lower() if rng.random() < 0.5 else w for w in words]
        s = "  ".join(words) if rng.random() < 0.5 else " ".join(words)
        s = re.sub(r"[,.?!']", "", s) if rng.random() < 0.5 else s + rng.choice(["!", " ?", "...", " ."])
        return s
    if kind == "words":
        words = text.split()
        k = min(3, max(1, len(words) // 10))
        spots = [i for i, w in enumerate(words) if not _NUM.search(w)] or list(range(len(words)))
        for i in rng.sample(spots, min(k, len(spots))):
            words[i] = rng.choice(vocab)
        return " ".join(words)
    if kind == "numbers":
        return _NUM.sub(lambda m: str(int(m.group()) + rng.randint(1, 9)), text)
    raise ValueError(kind)


def corpus(rng: random.Random, per_source: int) -> list[str]:
    rows = []
    for name in SOURCES:
        r = load(name)
        rng.shuffle(r)
        rows.extend(r[:per_source])
    return rows


def vocab_of(texts: Sequence[str]) -> list[str]:
    return sorted({w for t in texts for w in t.split() if w.isalpha() and len(w) > 2})


def planted_set(existing: list[str], n: int, rng: random.Random, vocab: Sequence[str]) -> list[tuple[str, str, int]]:
    """n planted candidates (kind, text, index of the original), kinds in equal shares."""
    with_num = [i for i, t in enumerate(existing) if _NUM.search(t)]
    out = []
    for j in range(n):
        kind = ("case", "words", "numbers")[j % 3]
        i = rng.choice(with_num) if kind == "numbers" else rng.randrange(len(existing))
        out.append((kind, plant(existing[i], kind, rng, vocab), i))
    return out


def fresh_set(pool: list[str], existing: list[str], n: int) -> list[str]:
    have = {normalise(t) for t in existing}
    out = [t for t in pool if normalise(t) not in have]
    return out[:n]


# --------------------------------------------------------------------------- the reference rule


def _rtok(text: str) -> list[str]:
    # rouge-score's default tokenizer: lower case, non-alphanumerics -> space, no stemming
    return _RTOK.sub(" ", text.lower()).split()


def dp_rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 the way rouge-score computes it (what the paper's code calls per pair): tokenise
    both texts, fill the full (|a|+1) x (|b|+1) LCS table in pure Python."""
    ref, can = _rtok(a), _rtok(b)
    if not ref or not can:
        return 0.0
    table = [[0] * (len(can) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(can) + 1):
            if ref[i - 1] == can[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    lcs = table[-1][-1]
    p, r = lcs / len(can), lcs / len(ref)
    return 0.0 if lcs == 0 else 2 * p * r / (p + r)


_REF: list = []
_DP = False


def _ref_init(existing: list, dp: bool) -> None:
    global _REF, _DP
    _REF, _DP = existing, dp


def _ref_one(args: tuple[int, Any]) -> list[int]:
    """Indices (into _REF) whose ROUGE-L with the candidate exceeds 0.95; all pairs, no pruning."""
    i, cand = args
    limit = len(_REF) if i < 0 else i  # i >= 0: compare only with the items before it
    score = dp_rouge_l if _DP else rouge_l
    return [j for j in range(limit) if score(cand, _REF[j]) > 0.95]


def reference_rule(existing: list[str], cands: list[str], procs: int = 2, dp: bool = False) -> list[bool]:
    """The paper's filter: candidate k is dropped if ROUGE-L > 0.95 vs any existing item or any earlier
    accepted candidate. All pairs are computed (in `procs` processes), then resolved in order.
    dp=False: bit-parallel LCS on pre-tokenised texts (our efficient baseline); dp=True: rouge-score's
    algorithm, re-tokenising per pair like the reference code (no process pool per item, though)."""
    ex = list(existing) if dp else [_rtok(t) for t in existing]
    ca = list(cands) if dp else [_rtok(t) for t in cands]
    with Pool(procs, initializer=_ref_init, initargs=(ex, dp)) as p:
        vs_existing = p.map(_ref_one, [(-1, c) for c in ca], chunksize=16)
    with Pool(procs, initializer=_ref_init, initargs=(ca, dp)) as p:
        vs_earlier = p.map(_ref_one, list(enumerate(ca)), chunksize=16)
    dropped: list[bool] = []
    for k in range(len(ca)):
        dropped.append(bool(vs_existing[k]) or any(not dropped[j] for j in vs_earlier[k]))
    return dropped


def prf(flags: Sequence[bool], truth: Sequence[bool]) -> tuple[float, float]:
    tp = sum(f and t for f, t in zip(flags, truth, strict=True))
    fp = sum(f and not t for f, t in zip(flags, truth, strict=True))
    fn = sum(t and not f for f, t in zip(flags, truth, strict=True))
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def reference(seed: int = 0, fast: bool = False) -> None:
    rng = random.Random(seed)
    rows = corpus(rng, 1000)
    rng.shuffle(rows)
    existing, pool = rows[:1500], rows[1500:]
    vocab = vocab_of(rows)
    planted = planted_set(existing, 750, rng, vocab)
    fresh = fresh_set(pool, existing, 750)
    cands = [(k, t) for k, t, _ in planted] + [("fresh", t) for t in fresh]
    rng.shuffle(cands)
    texts = [t for _, t in cands]
    truth = [k != "fresh" for k, _ in cands]
    print(f"reference: {len(existing)} existing + {len(cands)} candidates "
          f"({len(planted)} planted: 250 per kind; {len(fresh)} fresh)")

    # wall time, and CPU seconds (the pool's workers included): the machine is shared, so the
    # CPU-time ratio is the steadier one
    results: dict[str, tuple[float, float, list[bool]]] = {}
    for label, dp in [("reference rule, bit-parallel LCS (2 procs)", False),
                      ("reference rule, rouge-score DP LCS (2 procs)", True)][: 1 if fast else 2]:
        t0, c0 = time.perf_counter(), _cpu()
        flags = reference_rule(existing, texts, dp=dp)
        results[label] = (time.perf_counter() - t0, _cpu() - c0, flags)
    for label, role, cfg in [
        ("dedup default, items as train (duplicate check)", "train", DedupConfig()),
        ("dedup default, items as test (contamination check)", "test", DedupConfig()),
        ("dedup rule=rougeL (paper's rule via LSH), as train", "train",
         DedupConfig(rule="rougeL", numbers_must_match=False)),
    ]:
        t0, c0 = time.perf_counter(), _cpu()
        idx = DedupIndex(cfg)
        idx.add_many(((f"e{i}", t) for i, t in enumerate(existing)), role=role)
        verdicts = idx.check_and_add_many((f"c{i}", t) for i, t in enumerate(texts))
        results[label] = (time.perf_counter() - t0, _cpu() - c0, [v.outcome != "accepted" for v in verdicts])
    nan = (float("nan"), float("nan"), [])
    bp = results["reference rule, bit-parallel LCS (2 procs)"]
    dp_ = results.get("reference rule, rouge-score DP LCS (2 procs)", nan)

    kinds = ["case", "words", "numbers"]
    print("| method | wall s | CPU s | speed-up vs bit-parallel (wall / CPU) | vs rouge-score DP (wall / CPU) "
          f"| precision | recall (all planted) | {' | '.join('recall ' + k for k in kinds)} | fresh flagged |")
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(kinds) + "---:|")
    for label, (secs, cpu, flags) in results.items():
        p, r = prf(flags, truth)
        per = []
        for k in kinds:
            sel = [f for (kk, _), f in zip(cands, flags, strict=True) if kk == k]
            per.append(f"{sum(sel) / len(sel):.3f}")
        nf = sum(f for (kk, _), f in zip(cands, flags, strict=True) if kk == "fresh")
        print(f"| {label} | {secs:.2f} | {cpu:.2f} | {bp[0] / secs:.0f}x / {bp[1] / cpu:.0f}x | "
              f"{dp_[0] / secs:.0f}x / {dp_[1] / cpu:.0f}x | {p:.3f} | {r:.3f} | {' | '.join(per)} | {nf} |")


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# --------------------------------------------------------------------------- tuning


def _matrix(texts: Sequence[str], shingle: str, n: int, vocab: dict[int, int], mask: bool) -> sparse.csr_matrix:
    indptr, cols = [0], []
    for t in texts:
        for h in shingles(normalise(t, mask), shingle, n):
            cols.append(vocab.setdefault(int(h), len(vocab)))
        indptr.append(len(cols))
    return sparse.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=(len(texts), 1 << 24))


def max_jaccard(a: Sequence[str], b: Sequence[str], shingle: str, n: int, mask: bool = False) -> np.ndarray:
    """For each text of a, its highest exact Jaccard against b (sparse intersection counts)."""
    vocab: dict[int, int] = {}
    A, B = _matrix(a, shingle, n, vocab, mask), _matrix(b, shingle, n, vocab, mask)
    inter = (A @ B.T).tocsr()
    la, lb = np.asarray(A.sum(1)).ravel(), np.asarray(B.sum(1)).ravel()
    best = np.zeros(len(a))
    for i in range(len(a)):
        s, e = inter.indptr[i], inter.indptr[i + 1]
        if e > s:
            iv, jj = inter.data[s:e], inter.indices[s:e]
            best[i] = np.max(iv / (la[i] + lb[jj] - iv))
    return best


def tune(seed: int = 0) -> None:
    rng = random.Random(seed)
    schemes = [("word", 1), ("word", 2), ("word", 3), ("char", 3), ("char", 5)]
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    print("tune: per source 1,000 indexed rows, 1,000 'words' near-dups, 1,000 fresh rows")
    print("cells: recall on 'words' near-dups / share of fresh rows flagged (false-positive rate)")
    print("| source | shingles | " + " | ".join(f"t={t}" for t in thresholds) + " |")
    print("|---|---|" + "---|" * len(thresholds))
    for name in SOURCES:
        rows = load(name)
        rng.shuffle(rows)
        base, pool = rows[:1000], rows[1000:]
        vocab = vocab_of(rows[:5000])
        near = [plant(base[rng.randrange(1000)], "words", rng, vocab) for _ in range(1000)]
        fresh = fresh_set(pool, base, 1000)
        for sh, n in schemes:
            jn, jf = max_jaccard(near, base, sh, n), max_jaccard(fresh, base, sh, n)
            cells = [f"{np.mean(jn >= t):.2f} / {np.mean(jf >= t):.3f}" for t in thresholds]
            print(f"| {name} | {sh} {n} | " + " | ".join(cells) + " |")

    # GSM8K numbers: does the paper's rule keep numbers-only variants? does digit masking over-match?
    train = load("gsm8k")
    test = [json.loads(line)["question"] for line in open(DATA / "gsm8k/test.jsonl", encoding="utf-8")]
    rng.shuffle(train)
    sample = [t for t in train if _NUM.search(t)][:1000]
    kept = np.mean([rouge_l(_rtok(t), _rtok(plant(t, "numbers", rng, []))) <= 0.95 for t in sample])
    print(f"\nGSM8K: numbers-only variants the paper's rule keeps (ROUGE-L <= 0.95): {kept:.3f}")
    masked = max_jaccard(train[:3000], test, "word", 1, mask=True)
    plain = max_jaccard(train[:3000], test, "word", 1, mask=False)
    for t in (0.5, 0.6, 0.7):
        print(f"GSM8K train questions vs test at Jaccard >= {t}: masked {np.mean(masked >= t):.4f}, "
              f"unmasked {np.mean(plain >= t):.4f} (of 3,000)")


# --------------------------------------------------------------------------- scale


def scale(seed: int = 0, n_index: int = 10_000, n_cands: int = 100_000, batch: int = 1000) -> None:
    rng = random.Random(seed)
    rows = []
    for name in SOURCES:
        rows.extend(load(name, min_words=3))
    rng.shuffle(rows)
    index_rows, pool = rows[:n_index], rows[n_index:]
    vocab = vocab_of(rows[:20000])
    fresh = fresh_set(pool, index_rows, n_cands * 4 // 5)  # every real row left, if fewer
    n_planted = n_cands - len(fresh)
    planted = planted_set(index_rows, n_planted, rng, vocab)
    cands = [(k, t) for k, t, _ in planted] + [("fresh", t) for t in fresh]
    rng.shuffle(cands)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    idx = DedupIndex()
    third = n_index // 3  # seed-like rows as train, a third as test (the contamination guard is live)
    idx.add_many(((f"i{i}", t) for i, t in enumerate(index_rows[third:])), role="train")
    idx.add_many(((f"t{i}", t) for i, t in enumerate(index_rows[:third])), role="test")
    t_build = time.perf_counter() - t0
    counts: dict[str, int] = {}
    caught: dict[str, list[bool]] = {}
    for s in range(0, len(cands), batch):
        chunk = cands[s : s + batch]
        for (kind, _), v in zip(chunk, idx.check_and_add_many((f"c{s + k}", t) for k, (_, t) in enumerate(chunk)),
                                strict=True):
            counts[v.outcome] = counts.get(v.outcome, 0) + 1
            caught.setdefault(kind, []).append(v.outcome != "accepted")
    t_all = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scale: index {n_index:,} rows ({third:,} as test), {len(cands):,} candidates "
          f"({n_planted:,} planted near-dups), batches of {batch}")
    print(f"build {t_build:.2f} s, total {t_all:.2f} s ({len(cands) / (t_all - t_build):,.0f} candidates/s), "
          f"peak RSS {rss:.0f} MB (data loading alone {rss0:.0f} MB), outcomes {counts}, final index {len(idx):,}")
    print("rejected share per kind (planted near-dups of train or test rows; fresh rows can be near-dups of "
          "each other): " + ", ".join(f"{k} {np.mean(v):.3f} of {len(v):,}" for k, v in sorted(caught.items())))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("tune", "all"):
        tune()
    if what in ("reference", "all", "reference-fast"):
        reference(fast=what == "reference-fast")
    if what in ("scale", "all"):
        scale()
    if what in ("public-api", "all"):
        public_api(load("sst2", min_words=3))
