"""The statistics of docs/RESULTS.md: paired differences with data seeds as the units, t-intervals, the exact
sign-flip test, Holm's correction. Kept apart from the tables (bench/study_report.py) so each is tested alone.

Paired differences are taken per (data seed, training seed) and averaged within a data seed first, so a data
seed counts once however many training seeds it has: the t-interval and the p-values treat data seeds (not
runs) as the independent units.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from scipy import stats

Run = dict[str, Any]


def final_accuracy(r: Run) -> float:
    return float(r["final_test_accuracy"])


def iteration_accuracy(k: int) -> Callable[[Run], float]:
    """Test accuracy of a run's student k (0 = plain fine-tuning). A run that stopped early ended with its
    last student, which is then its student k too: the loop would have had nothing new to train on."""
    def acc(r: Run) -> float:
        its = r["iterations"]
        return float(its[min(k, len(its) - 1)]["test_accuracy"])
    return acc


def paired(runs: list[Run], a: str, b: str, value_a: Callable[[Run], float] = final_accuracy,
           value_b: Callable[[Run], float] = final_accuracy) -> dict[int, list[float]]:
    """Per data seed, the differences (points) a - b over the training seeds where both arms ran."""
    by = {(r["arm"], r["data_seed"], r["train_seed"]): r for r in runs}
    out: dict[int, list[float]] = defaultdict(list)
    for (arm, ds, ts), r in sorted(by.items()):
        if arm == a and (b, ds, ts) in by:
            out[ds].append(100 * (value_a(r) - value_b(by[(b, ds, ts)])))
    return dict(out)


def sign_flip_p(values: list[float]) -> float:
    """Exact two-sided sign-flip (randomisation) p-value of the mean of paired differences: the share of the
    2^n sign assignments whose |mean| is at least the observed one. Its smallest value is 2 / 2^n."""
    n = len(values)
    if n == 0:
        return math.nan
    observed = abs(sum(values)) - 1e-9  # a tolerance for float sums of the same numbers in another order
    hits = sum(abs(sum(s * v for s, v in zip(signs, values, strict=True))) >= observed
               for signs in itertools.product((1, -1), repeat=n))
    return hits / 2 ** n


def clustered(diffs: dict[int, list[float]], level: float = 0.95) -> dict[str, Any]:
    """Mean, t-interval at `level` and two-sided t p over data-seed means; the exact sign-flip p beside it."""
    means = [statistics.fmean(v) for v in diffs.values()]
    n = len(means)
    m = statistics.fmean(means) if means else math.nan
    out: dict[str, Any] = {"mean": m, "clusters": n, "pairs": sum(len(v) for v in diffs.values()),
                           "seed_means": dict(zip(diffs, means, strict=True)), "lo": math.nan, "hi": math.nan,
                           "p": math.nan, "p_signflip": sign_flip_p(means) if n else math.nan}
    if n < 2:
        return out
    se = statistics.stdev(means) / math.sqrt(n)
    half = stats.t.ppf(1 - (1 - level) / 2, n - 1) * se
    p = 1.0 if se == 0 and m == 0 else (0.0 if se == 0 else float(2 * stats.t.sf(abs(m) / se, n - 1)))
    out.update(lo=m - half, hi=m + half, p=p)
    return out


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (nan stays nan)."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out, running = list(ps), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * ps[i]))
        out[i] = running
    return out


def averaged_over_tasks(per_task: list[dict[int, list[float]]]) -> dict[int, list[float]]:
    """Per data seed, the mean over tasks of each task's data-seed mean; only data seeds every task has."""
    common = set.intersection(*(set(d) for d in per_task)) if per_task else set()
    return {ds: [statistics.fmean(statistics.fmean(d[ds]) for d in per_task)] for ds in sorted(common)}
