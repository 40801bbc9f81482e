"""The sampling noise of a run's DPD and EOD: a bootstrap 95% interval over its test samples.

A run's DPD and EOD (paper eqs. 1-4, Algorithm 1) are a max - min over groups of rates
estimated from finitely many test samples, so they carry sampling noise, and the max - min of
noisy rates is biased upward. The interval here says how large that noise is: resample the
test set with replacement ``n_boot`` times, recompute DPD and EOD on every resample, and take
the 2.5 % and 97.5 % quantiles (``np.quantile``'s linear rule, as fairlearn's bootstrap).

Why not fairlearn's ``MetricFrame(n_boot=..., ci_quantiles=..., random_state=...)``
    Its bootstrap returns a quantile per metric and group aggregate, not the joint draws.
    EOD is the max of the TPR and FPR differences *of one resample*, and Algorithm 1 averages
    the per-class values *of one resample*; the quantile of that average or max cannot be
    assembled from per-metric quantiles. So every class and every rate here is computed from
    the same resampled test set, and only the final DPD and EOD are summarised. (MetricFrame
    also rebuilds a pandas frame per resample; tests check that on a single binary metric, the
    selection-rate or TPR difference, both give the same interval up to Monte-Carlo error.)

How (vectorised, no per-sample loop)
    DPD and EOD depend on the test samples only through the counts of the distinct cells
    (group, label, prediction). Resampling n samples with replacement gives cell counts that
    are multinomial(n, observed cell frequencies), so one ``rng.multinomial`` call draws all
    ``n_boot`` resamples as a [n_boot, cells] count matrix, with exactly the distribution of
    index resampling. From it, per resample, group and class: samples, positives (Y = c),
    predicted positives (Ŷ = c) and true positives; then the same rates and the same
    undefined-rate rule as the point value (:func:`kdray.analysis.fairness.rates_from_counts`,
    :func:`kdray.analysis.fairness.class_average`). A resample where a group has no positives for a
    class leaves that group out of that rate, as for the point value; resamples where DPD or
    EOD is undefined are left out of the quantiles. Work and memory are O(n_boot x cells),
    where cells <= min(n, groups x classes²): for Trifeature (10 classes, 10 groups) at most
    1,000 cells whatever the test set's size.

Determinism: a fixed seed (:data:`SEED`); the same predictions give the same interval on any
worker. :data:`N_BOOT` = 200 resamples.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from kdray.analysis.fairness import algorithm_1_classes, class_average, rates_from_counts

N_BOOT = 200
SEED = 0
QUANTILES = (0.025, 0.975)
INTERVAL_KEYS = ("dpd_low", "dpd_high", "eod_low", "eod_high")


def _positions(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Index of each value in ``classes`` (-1 where absent)."""
    order = np.argsort(classes, kind="stable")
    pos = np.clip(np.searchsorted(classes[order], values), 0, len(classes) - 1)
    return np.where(classes[order][pos] == values, order[pos], -1)


def _sum_by(draws: np.ndarray, target: np.ndarray, size: int) -> np.ndarray:
    """[B, size]: the counts of the cells summed by ``target`` (a column per cell; -1: none)."""
    out = np.zeros((draws.shape[0], size))
    keep = np.flatnonzero(target >= 0)
    if len(keep):
        order = keep[np.argsort(target[keep], kind="stable")]
        cols = target[order]
        starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        out[:, cols[starts]] = np.add.reduceat(draws[:, order], starts, axis=1)
    return out


def cell_counts(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (group index, label, prediction) cells of a test set [cells, 3] and how
    many samples fall in each."""
    _, g = np.unique(np.asarray(sensitive), return_inverse=True)
    return np.unique(np.stack([g, np.asarray(y_true), np.asarray(y_pred)], axis=1), axis=0,
                     return_counts=True)


def cell_metrics(cells: np.ndarray, draws: np.ndarray, classes: Sequence[int]
                 ) -> dict[str, np.ndarray]:
    """DPD, EOD, TPR and FPR differences (Algorithm 1) of each row of ``draws`` [B, cells],
    the cell counts of one (resampled) test set; ``{"dpd", ...}`` arrays of length B."""
    classes = np.asarray(classes)
    B, G, K = len(draws), int(cells[:, 0].max()) + 1, len(classes)
    cg, ky, kp = cells[:, 0], _positions(cells[:, 1], classes), _positions(cells[:, 2], classes)

    def per_class(target_class: np.ndarray) -> np.ndarray:  # [G, B, K]
        col = np.where(target_class >= 0, cg * K + target_class, -1)
        return _sum_by(draws, col, G * K).reshape(B, G, K).transpose(1, 0, 2)

    n = _sum_by(draws, cg, G).T[:, :, None]  # [G, B, 1]
    sel, tpr, fpr = rates_from_counts(n, per_class(ky), per_class(kp),
                                      per_class(np.where(ky == kp, ky, -1)))
    return class_average(sel, tpr, fpr)


def bootstrap_draws(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray,
                    classes: Sequence[int], n_boot: int = N_BOOT, seed: int = SEED
                    ) -> dict[str, np.ndarray]:
    """DPD, EOD, TPR and FPR differences (fractions) of ``n_boot`` resamples of the test set.

    ``classes`` are Algorithm 1's classes (``[1]`` for binary labels), as for the point value
    (:func:`kdray.analysis.fairness.fairness_metrics`). Returns ``{"dpd", "eod", "tpr_diff",
    "fpr_diff"}``, each ``[n_boot]`` (NaN where a resample leaves it undefined).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot: {n_boot!r} is not a positive number of resamples")
    cells, counts = cell_counts(y_true, y_pred, sensitive)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(counts.sum(), counts / counts.sum(), size=n_boot)  # [B, cells]
    return cell_metrics(cells, draws, classes)


def fairness_interval(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray,
                      classes: Sequence[int], n_boot: int = N_BOOT, seed: int = SEED
                      ) -> dict[str, float]:
    """The bootstrap 95% interval of DPD and EOD (fractions): ``dpd_low``, ``dpd_high``,
    ``eod_low``, ``eod_high`` (NaN when no resample defines the metric)."""
    draws = bootstrap_draws(y_true, y_pred, sensitive, classes, n_boot, seed)
    out = {}
    for metric in ("dpd", "eod"):
        x = draws[metric][np.isfinite(draws[metric])]
        low, high = np.quantile(x, QUANTILES) if len(x) else (np.nan, np.nan)
        out[f"{metric}_low"], out[f"{metric}_high"] = float(low), float(high)
    return out


def add_intervals(rows: list[dict[str, Any]], label: np.ndarray, pred: np.ndarray,
                  attributes: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """A run's fairness rows (:func:`kdray.analysis.fairness.run_fairness`, one per attribute),
    each with its :func:`fairness_interval` added (computed on the Ray worker that read it)."""
    classes = algorithm_1_classes(label)
    return [{**row, **fairness_interval(label, pred, attributes[row["attribute"]], classes)}
            for row in rows]
