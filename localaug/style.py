"""The seed set's writing style, learned from it and applied to the teacher's text (`match_style: true`).

Why: SST-2's reviews are lower-cased and tokenised ("it 's a film , really"), SNIPS's requests are
lower-cased with no final punctuation; an instruction-tuned teacher writes capitalised, punctuated prose
whatever the prompt shows, and the student then trains on text unlike anything it is tested on
(docs/RESULTS.md, "The teacher"). Rewriting the teacher's text is cheap and certain; asking the teacher to
imitate the style was already in the SST-2 card's instruction, and it did not.

Only what the seed set shows with near unanimity is applied, so a task whose seeds mix styles (TREC's
questions are capitalised) keeps the teacher's text as written in that respect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

UNANIMOUS = 0.9  # a habit the seeds follow at least this often is the style
MIN_EVIDENCE = 5  # fewer occurrences than this say nothing about punctuation

_PUNCT = "[,.!?;:]"
_SPACED = re.compile(rf"\s{_PUNCT}(?=\s|$)")  # "film , really" / "really ."
_TIGHT = re.compile(rf"[^\W\d_]{_PUNCT}(?=\s|$)")  # "film, really" / "really."
_CONTRACTION_SPACED = re.compile(r"[^\W\d_] (?:n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)
_CONTRACTION_TIGHT = re.compile(r"[^\W\d_](?:n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)
_QUOTES = ('"', "\u201c", "\u201d", "'")
_FINAL = ".!?"


@dataclass(frozen=True)
class TextStyle:
    """What to change in a new text so that it reads like the seeds."""

    lowercase: bool = False  # the seeds have no capital letters
    spaced_punctuation: bool = False  # "film , really ." and "it 's" (Penn Treebank tokens, as SST-2)
    final_punctuation: bool = True  # False: the seeds do not end with . ! or ?
    quoted: bool = True  # False: the seeds are not wrapped in quotation marks

    @classmethod
    def learn(cls, texts: Iterable[str]) -> TextStyle:
        texts = [t.strip() for t in texts if t.strip()]
        if not texts:
            return cls()
        n = len(texts)
        lower = sum(not any(c.isupper() for c in t) for t in texts) / n >= UNANIMOUS
        spaced = sum(len(_SPACED.findall(t)) + len(_CONTRACTION_SPACED.findall(t)) for t in texts)
        tight = sum(len(_TIGHT.findall(t)) + len(_CONTRACTION_TIGHT.findall(t)) for t in texts)
        spaced_style = spaced >= MIN_EVIDENCE and spaced / (spaced + tight) >= UNANIMOUS
        final = sum(t[-1] in _FINAL for t in texts) / n > 1 - UNANIMOUS
        quoted = sum(t[0] in _QUOTES and t[-1] in _QUOTES for t in texts) / n > 1 - UNANIMOUS
        return cls(lowercase=lower, spaced_punctuation=spaced_style, final_punctuation=final, quoted=quoted)

    def apply(self, text: str) -> str:
        out = text.strip()
        if not self.quoted and len(out) > 1 and out[0] in _QUOTES and out[-1] in _QUOTES:
            out = out[1:-1].strip()
        if self.lowercase:
            out = out.lower()
        if self.spaced_punctuation:
            out = re.sub(r"([^\W\d_])(n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1 \2", out, flags=re.IGNORECASE)
            out = re.sub(rf"(\S)({_PUNCT}+)(?=\s|$)", r"\1 \2", out)
        if not self.final_punctuation:
            out = out.rstrip(_FINAL + " ")
        return " ".join(out.split()) or text

    def __str__(self) -> str:
        parts = [name for name, on in (("lower-cased", self.lowercase), ("tokenised punctuation",
                                       self.spaced_punctuation)) if on]
        parts += [name for name, on in (("no final punctuation", self.final_punctuation),
                                        ("no enclosing quotes", self.quoted)) if not on]
        return ", ".join(parts) or "as written"
