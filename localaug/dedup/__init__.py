"""Exact and near-duplicate detection, plus a contamination guard against the test set.

text: normalisation, shingles, exact similarities; minhash: the MinHash-LSH kernel; index: DedupConfig,
Verdict, DedupIndex (duplicates and contamination); persist: the .npz index file.
"""

from .index import DedupConfig, DedupIndex, Verdict
from .text import as_text

__all__ = ["DedupConfig", "DedupIndex", "Verdict", "as_text"]
