"""Exact and near-duplicate detection, plus a contamination guard against the test set."""

from .index import DedupConfig, DedupIndex, Verdict, as_text

__all__ = ["DedupConfig", "DedupIndex", "Verdict", "as_text"]
