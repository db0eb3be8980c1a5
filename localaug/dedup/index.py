"""Exact and near-duplicate detection, plus a contamination guard against the test set.

LLM2LLM's reference code drops a generated example whose ROUGE-L against any existing example exceeds
0.95, comparing all pairs (quadratic). Here a candidate is

1. normalised (`text.normalise`: NFKC, case-folded, punctuation -> space, whitespace collapsed; digits
   optionally masked),
2. looked up exactly (a dict keyed by the normalised text: similarity 1.0),
3. otherwise sketched with MinHash over word or character n-grams and looked up in a MinHashLSH whose
   threshold sits below the confirmation threshold, so the LSH stage loses little (`minhash`: the
   vectorised signatures and band-key insert/query),
4. and every LSH hit whose MinHash estimate is plausible is confirmed by the exact similarity:
   Jaccard of the shingle sets (default: word unigrams >= 0.7) or ROUGE-L F1 of the normalised
   tokens (`rule="rougeL"`: the paper's rule, > 0.95, strict like the paper).

Two indexes share one `DedupIndex`: "train" items (seed, D_i, accepted candidates) for duplicates and
"test" items for contamination. Contamination is checked first and wins. `save`/`load` use the .npz
file of `persist`.

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
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import UserError
from .minhash import lsh_insert, lsh_query, minhash_flat, minhash_many, new_lsh, permutations
from .persist import read_index, write_index
from .text import DIGITS, jaccard, normalise, rouge_l, shingle_set, shingles, word_unigram_hashes

if TYPE_CHECKING:
    from datasketch import MinHashLSH  # imported where an index is built (minhash.new_lsh): it pulls in scipy

Role = Literal["train", "test"]
Outcome = Literal["accepted", "duplicate", "contaminated"]


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


# --------------------------------------------------------------------------- the index


class DedupIndex:
    """Train items (duplicates) and test items (contamination), each exact + MinHash-LSH indexed."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        c = self.config
        self._a, self._b = permutations(c.num_perm, c.seed)
        self._lsh: dict[Role, MinHashLSH] = {role: new_lsh(c.lsh_for(role), c.num_perm) for role in ("train", "test")}
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
        self._digits.extend("".join(DIGITS.findall(n)) for n in norms)
        for k, (role, norm) in enumerate(zip(roles, norms, strict=True)):
            self._exact[role].setdefault(norm, base + k)  # first id wins: reports point at the original
            lsh_insert(self._lsh[role], base + k, sigs[k])

    # ----------------------------------------------------------------- checking

    def _best(self, role: Role, norm: str, sig: np.ndarray) -> tuple[int | None, float, bool]:
        """(row, similarity, passes) of the most similar `role` item; exact hits short-circuit."""
        threshold = self.config.threshold_for(role)
        row = self._exact[role].get(norm)
        if row is not None:  # equal normalised texts have equal numbers too
            return row, 1.0, True
        best_row, best_sim = None, 0.0
        hits = lsh_query(self._lsh[role], sig)
        if hits:
            rows = np.sort(np.fromiter(hits, dtype=np.int64, count=len(hits)))  # ties: oldest row wins
            # one vectorised MinHash estimate drops most LSH hits before any exact comparison
            est = (self._sig[rows] == sig).mean(axis=1)
            rows = rows[est >= self.config.prefilter_for(role)]
            sh = self._set(norm) if self.config.rule == "jaccard" else None
            digits = "".join(DIGITS.findall(norm)) if self._checks_numbers(role) else None
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
                norms = [DIGITS.sub("0", n) for n in plain]
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
        hashed, lens = word_unigram_hashes(norms, self._tokcache)
        return minhash_flat(hashed, lens, self._a, self._b)

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
        meta = {"config": asdict(self.config), "ids": self.ids, "roles": self.roles, "texts": self.texts}
        write_index(Path(path), meta, self._sig[: len(self.ids)])

    @classmethod
    def load(cls, path: Path) -> DedupIndex:
        path = Path(path)
        meta, sigs = read_index(path)
        index = cls(DedupConfig.from_dict(meta["config"]))
        ids, roles, texts = meta["ids"], meta["roles"], meta["texts"]
        if not (len(ids) == len(roles) == len(texts) == len(sigs)) or sigs.shape[1:] != (index.config.num_perm,):
            raise UserError("dedup index is inconsistent (lengths differ)", file=path)
        index._id_set = set(ids)
        with _no_gc():
            index._insert(list(ids), list(roles), list(texts), sigs)
        return index
