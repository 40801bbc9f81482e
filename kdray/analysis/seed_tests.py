"""Tests with the seed as the unit: each seed reduced to one number, then tested across seeds.

The DS runs of one seed share the teacher, the initial weights and the batch order, so they
are one replicate, not one per temperature (``docs/claims.md``). The claims use:

- :func:`paired_differences`: per seed, the mean of its DS values minus its reference (NDS
  or teacher) value, d_k = mean_T y_DS(k, T) - y_ref(k);
- :func:`seed_rhos`: per seed, Spearman's ρ between T and the metric over its DS runs;
- :func:`t_across_seeds`: the two-sided one-sample t-test of those numbers against 0
  (``scipy.stats.ttest_1samp``), the mean (the effect) with its 95 % t interval
  (``TtestResult.confidence_interval``) and Cohen's d = mean / sd (ddof = 1);
- :func:`count_trend`: for #SC/#TC, which have no per-seed value, ρ between T and the count
  per T, with a permutation p that shuffles T within each seed
  (``scipy.stats.permutation_test(permutation_type="pairings")``).

Degenerate data give NaN and a reason, never a crash (see :func:`t_across_seeds`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from kdray.analysis.significance import ZERO_SPREAD, welch_tests

MIN_SEEDS = 3
MIN_TEMPERATURES = 3
CONFIDENCE = 0.95
N_PERMUTATIONS = 999
PERMUTATION_SEED = 0
BATCH = 100  # resamples per vectorised call (memory: BATCH x seeds x T x classes)


@dataclass(frozen=True)
class SeedTest:
    """One test across seeds: ``n`` seeds, the test ``statistic`` (t, or ρ for
    :func:`count_trend`) and its two-sided ``pvalue``, the ``effect`` (mean over seeds, or ρ)
    with its 95 % interval ``[low, high]``, Cohen's ``d``, and a ``reason`` where no test
    was possible (or the data were unusual)."""

    n: int
    statistic: float = math.nan
    pvalue: float = math.nan
    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    d: float = math.nan
    reason: str = ""


def _zero(x: float, scale: float = 1.0) -> bool:
    return abs(x) <= ZERO_SPREAD * max(1.0, scale)


def t_across_seeds(x: Sequence[float]) -> SeedTest:
    """Two-sided one-sample t-test of the seeds' numbers ``x`` against 0.

    NaN entries are left out. Fewer than :data:`MIN_SEEDS`: no test. Every seed 0 (within
    the class tests' tolerance): no test, "no seed shows an effect". Every seed the same
    nonzero number: t = ±inf and p = 0, the test's limit as the spread shrinks (scipy's own
    answer), with the reason saying so.
    """
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < MIN_SEEDS:
        return SeedTest(n, reason=f"{n} seed(s) with data; needs >= {MIN_SEEDS}")
    mean, scale = float(x.mean()), float(np.max(np.abs(x)))
    if _zero(float(np.ptp(x)), scale):
        if _zero(mean, scale):
            return SeedTest(n, effect=0.0, low=0.0, high=0.0, reason="no seed shows an effect")
        return SeedTest(n, math.copysign(math.inf, mean), 0.0, mean, mean, mean,
                        math.copysign(math.inf, mean),
                        f"every seed gives {mean:.3g}: no spread across seeds, t infinite")
    res = stats.ttest_1samp(x, 0.0)
    ci = res.confidence_interval(CONFIDENCE)
    return SeedTest(n, float(res.statistic), float(res.pvalue), mean, float(ci.low),
                    float(ci.high), mean / float(x.std(ddof=1)))


def mean_interval(x: Sequence[float]) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values: the mean over seeds with its 95 % t
    interval (``scipy.stats.ttest_1samp(x).confidence_interval``); no interval for one value,
    a point for values without spread."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        m = float(x[0]) if len(x) else math.nan
        return m, math.nan, math.nan, len(x)
    mean = float(x.mean())
    if _zero(float(np.ptp(x)), float(np.max(np.abs(x)))):
        return mean, mean, mean, len(x)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return mean, float(ci.low), float(ci.high), len(x)


def paired_differences(ds: Mapping[int, Sequence[float]], ref: Mapping[int, float]
                       ) -> np.ndarray:
    """d_k = (mean of seed k's finite DS values) - (seed k's reference value), for every seed
    with both (``ds``: seed -> its DS values in the claim's temperatures; ``ref``: seed ->
    the reference run's value)."""
    out = []
    for seed in sorted(set(ds) & set(ref)):
        y = np.asarray(ds[seed], float)
        y = y[np.isfinite(y)]
        if len(y) and math.isfinite(ref[seed]):
            out.append(float(y.mean()) - float(ref[seed]))
    return np.asarray(out, float)


def seed_rho(t: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ between T and the metric over one seed's DS runs (NaN values left out);
    NaN with fewer than :data:`MIN_TEMPERATURES` temperatures, 0 when the metric is the same
    at every T (no order to rank)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(np.unique(t)) < MIN_TEMPERATURES:
        return math.nan
    if _zero(float(np.ptp(y)), float(np.max(np.abs(y)))):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(t, y).statistic)


def seed_rhos(points: Mapping[int, Sequence[tuple[float, float]]]) -> np.ndarray:
    """:func:`seed_rho` of every seed (``points``: seed -> its (T, metric) pairs), seeds
    with too few temperatures left out."""
    rhos = [seed_rho(*zip(*p)) if p else math.nan for _, p in sorted(points.items())]
    return np.asarray([r for r in rhos if math.isfinite(r)], float)


def _counts(ds: np.ndarray, ref: np.ndarray, level: float) -> np.ndarray:
    """Significant classes per T: ``ds`` [seeds, ..., T, classes] (any batch axes between),
    ``ref`` [runs, classes]; returns [..., T]."""
    shape = ds.shape[1:]
    flat = ds.reshape(len(ds), -1)
    _, p, _ = welch_tests(flat, np.tile(ref, (1, flat.shape[1] // ref.shape[1])))
    return (np.isfinite(p) & (p <= level)).reshape(shape).sum(axis=-1)


def _rho(temps: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's ρ of T vs the counts along the last axis (Pearson's r of their ranks,
    ``scipy.stats.pearsonr(axis=-1)``); 0 where the counts do not vary."""
    ranks = stats.rankdata(counts, axis=-1)
    t = np.broadcast_to(stats.rankdata(temps), ranks.shape)
    flat = np.ptp(counts, axis=-1) == 0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        r = stats.pearsonr(t, np.where(flat[..., None], t, ranks), axis=-1).statistic
    return np.where(flat, 0.0, r)


def count_trend(temps: Sequence[float], ds: np.ndarray, ref: np.ndarray, level: float
                ) -> tuple[SeedTest, np.ndarray]:
    """ρ between T and the number of significant classes per T, with a permutation p.

    ``ds`` [seeds, T, classes]: normalised class accuracy of each seed's DS run at each of
    ``temps``; ``ref`` [runs, classes]: the reference's. The count at T is the number of
    classes with a Welch p <= ``level`` (:func:`kdray.analysis.significance.welch_tests`). The p
    comes from :data:`N_PERMUTATIONS` resamples (exact when fewer arrangements exist) that
    permute the T labels of each seed's runs independently: under the null that T does not
    matter they are exchangeable, and the shared reference stays fixed. Returns the test and
    the observed counts per T.
    """
    temps, ds, ref = np.asarray(temps, float), np.asarray(ds, float), np.asarray(ref, float)
    counts = _counts(ds, ref, level)
    if len(ds) < MIN_SEEDS or len(ref) < 2:
        return SeedTest(len(ds), reason=f"{len(ds)} DS seed(s) with every T and {len(ref)} "
                        f"reference run(s); needs >= {MIN_SEEDS} and >= 2"), counts
    if np.ptp(counts) == 0:
        return SeedTest(len(ds), reason=f"constant input: {counts[0]} significant classes "
                        "at every T"), counts

    def statistic(*orders: np.ndarray, axis: int = -1) -> np.ndarray:
        # orders: one [..., T] array of T positions per seed -> ds [seeds, ..., T, classes]
        shuffled = np.stack([seed[np.asarray(order)] for seed, order in zip(ds, orders)])
        return _rho(temps, _counts(shuffled, ref, level))

    res = stats.permutation_test(tuple(np.arange(len(temps)) for _ in ds), statistic,
                                 permutation_type="pairings", vectorized=True, batch=BATCH,
                                 n_resamples=N_PERMUTATIONS,
                                 rng=np.random.default_rng(PERMUTATION_SEED))
    rho = float(res.statistic)
    return SeedTest(len(ds), rho, float(res.pvalue), rho), counts
