"""Fairness of one model w.r.t. one sensitive attribute: DPD and EOD (paper eqs. 1-4, Algorithm 1).

For a binary prediction problem and groups ``a`` of the sensitive attribute ``A``:

    DPD = max_a P(Ŷ=1 | A=a) - min_a P(Ŷ=1 | A=a)                         (eq. 1)
    TPR difference = max_a P(Ŷ=1 | Y=1, A=a) - min_a P(Ŷ=1 | Y=1, A=a)    (eq. 2)
    FPR difference = max_a P(Ŷ=1 | Y=0, A=a) - min_a P(Ŷ=1 | Y=0, A=a)    (eq. 3)
    EOD = max(TPR difference, FPR difference)                             (eq. 4)

These are fairlearn's ``demographic_parity_difference`` and
``equalized_odds_difference(agg="worst_case")`` with ``method="between_groups"``.

Labels
    Binary labels (the test labels are a subset of {0, 1}) are used directly, class 1
    positive. Multi-class labels follow the paper's Algorithm 1: for every class ``c`` of the
    test labels, ``Y = [y == c]`` and ``Ŷ = [ŷ == c]`` (one-vs-rest), compute DPD and EOD, and
    average over classes: ``F̄ = (1/|C|) Σ_c F_c``.

Undefined rates (a deliberate departure from fairlearn)
    fairlearn's ``true_positive_rate`` returns 0.0 for a group with no positives and
    ``false_positive_rate`` 0.0 for a group with no negatives, silently; one such group can
    inflate EOD (``docs/fairness.md``). Here a rate that is undefined for a group (0/0) excludes that
    group from that rate's max - min only. A difference needs at least two groups where the
    rate is defined, otherwise it is NaN; EOD_c is the max of the defined differences (NaN
    when neither is); the class average ignores NaN classes, and the number of excluded
    (class, group, rate) cells is reported as ``n_undefined``. DPD is defined whenever two
    groups are present. On data where every rate is defined the results equal fairlearn's
    functions exactly (tests check this).

Backends
    ``backend="fairlearn"`` (default) computes the per (class, group) rates with one
    ``fairlearn.metrics.MetricFrame`` per run and attribute (the one-vs-rest problems
    stacked, the class as a control feature, fed as weighted distinct cells): about 0.4 s per
    run and attribute for 10 classes x 10 groups whatever the test set's size
    (``benchmarks/fairness_cells.py``). ``backend="numpy"`` counts the same cells
    with ``np.bincount`` in about a millisecond; the tests check that both give the same
    numbers and equal fairlearn's ``demographic_parity_difference`` and
    ``equalized_odds_difference`` on well-posed data. Both apply the same undefined-rate rule.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from kdray.analysis.groups import ROLE_ORDER

BACKENDS = ("fairlearn", "numpy")
ATTR_PREFIX = "attr_"


def is_binary(labels: np.ndarray) -> bool:
    """Binary task: the test labels are a subset of {0, 1} (class 1 is the positive class)."""
    return bool(np.isin(np.unique(labels), [0, 1]).all())


def _difference(rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max - min over groups (axis 0) of the defined (non-NaN) rates; NaN with < 2 defined."""
    defined = (~np.isnan(rates)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        diff = np.nanmax(rates, axis=0) - np.nanmin(rates, axis=0)
    diff = np.where(defined >= 2, diff, np.nan)
    return diff, defined


def group_rates(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray,
                classes: Sequence[int]) -> dict[str, np.ndarray]:
    """Per (group, class) one-vs-rest counts and rates, NaN where a rate is 0/0.

    Returns ``groups`` [G], and [G, K] arrays ``n``, ``n_pos``, ``n_neg``, ``selection_rate``
    = P(Ŷ=c | A=a), ``tpr`` = P(Ŷ=c | Y=c, A=a), ``fpr`` = P(Ŷ=c | Y≠c, A=a).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.asarray(classes)
    groups, g = np.unique(np.asarray(sensitive), return_inverse=True)
    G, K = len(groups), len(classes)
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]

    def index(values: np.ndarray) -> np.ndarray:  # position in ``classes``, -1 if absent
        pos = np.clip(np.searchsorted(sorted_classes, values), 0, max(K - 1, 0))
        return np.where(sorted_classes[pos] == values, order[pos], -1) if K else values * 0 - 1

    yi, pi = index(y_true), index(y_pred)

    def cells(mask: np.ndarray, idx: np.ndarray) -> np.ndarray:
        m = mask & (idx >= 0)
        return np.bincount(g[m] * K + idx[m], minlength=G * K).reshape(G, K)

    everyone = np.ones(len(g), bool)
    n = np.bincount(g, minlength=G)[:, None] * np.ones((1, K), dtype=np.int64)
    n_pos = cells(everyone, yi)
    pred_pos = cells(everyone, pi)
    tp = cells(yi == pi, yi)
    sel, tpr, fpr = rates_from_counts(n, n_pos, pred_pos, tp)
    return {"groups": groups, "n": n, "n_pos": n_pos, "n_neg": n - n_pos,
            "selection_rate": sel, "tpr": tpr, "fpr": fpr}


def rates_from_counts(n: np.ndarray, n_pos: np.ndarray, pred_pos: np.ndarray, tp: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selection rate, TPR and FPR from one-vs-rest counts of any (broadcastable) shape.

    ``n``: samples, ``n_pos``: samples with Y = c, ``pred_pos``: samples with Ŷ = c, ``tp``:
    samples with Y = Ŷ = c. NaN where a rate is 0/0 (no samples, no positives, no negatives).
    """
    n_neg = n - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        sel = np.where(n > 0, pred_pos / n, np.nan)
        tpr = np.where(n_pos > 0, tp / n_pos, np.nan)
        fpr = np.where(n_neg > 0, (pred_pos - tp) / n_neg, np.nan)
    return sel, tpr, fpr


def _fairlearn_rates(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray,
                     classes: Sequence[int]) -> dict[str, np.ndarray]:
    """The same per (group, class) rates as :func:`group_rates`, computed by fairlearn.

    One ``MetricFrame`` for all classes: the K one-vs-rest problems are stacked and the class
    is a control feature, so fairlearn's ``selection_rate``, ``true_positive_rate`` and
    ``false_positive_rate`` are evaluated per (class, group). The stacked rows are given to it
    as their distinct (class, group, Y, Ŷ) cells, each weighted by how many samples it holds
    (``sample_weight`` through ``sample_params``): at most 4 K G rows whatever the test set's
    size, with the same sums, as integers are exact in float64, so the same rates as the
    K x n rows one by one, bit for bit. fairlearn stacks each row of a group in Python, so
    rows one by one cost 3.08 s per attribute of a 30,000-sample run against 0.41 s as cells
    (``python benchmarks/fairness_cells.py``, 2-core Intel Xeon dev machine, 2026-12-03).
    """
    from fairlearn.metrics import (MetricFrame, false_positive_rate, selection_rate,
                                   true_positive_rate)

    y_true, y_pred, sensitive = np.asarray(y_true), np.asarray(y_pred), np.asarray(sensitive)
    classes = np.asarray(classes)
    cls = np.repeat(classes, len(y_true))
    stacked = pd.DataFrame({"class": cls, "group": np.tile(sensitive, len(classes)),
                            "y": (np.tile(y_true, len(classes)) == cls).astype(int),
                            "p": (np.tile(y_pred, len(classes)) == cls).astype(int)})
    cells = stacked.value_counts(sort=False).rename("weight").reset_index()
    weight = cells["weight"].to_numpy(dtype=float)
    metrics = {"selection_rate": selection_rate, "tpr": true_positive_rate,
               "fpr": false_positive_rate,
               "n": lambda t, p, sample_weight: float(np.sum(sample_weight)),
               "n_pos": lambda t, p, sample_weight: float(np.sum(sample_weight * t))}
    mf = MetricFrame(metrics=metrics, y_true=cells["y"].to_numpy(),
                     y_pred=cells["p"].to_numpy(), sensitive_features=cells["group"],
                     control_features=cells["class"],
                     sample_params={k: {"sample_weight": weight} for k in metrics})
    groups = np.unique(sensitive)
    out = {}
    for k in metrics:
        table = mf.by_group[k].unstack("class")  # rows: groups, columns: classes
        out[k] = table.reindex(index=groups, columns=classes).to_numpy(dtype=float)
    out["n_neg"] = out["n"] - out["n_pos"]
    out["tpr"] = np.where(out["n_pos"] > 0, out["tpr"], np.nan)  # fairlearn said 0.0
    out["fpr"] = np.where(out["n_neg"] > 0, out["fpr"], np.nan)
    out["groups"] = groups
    return out


def fairness_metrics(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray,
                     classes: Sequence[int] | None = None,
                     backend: str = "fairlearn") -> dict[str, Any]:
    """DPD and EOD (fractions, not %) of one model w.r.t. one attribute.

    Parameters
    ----------
    y_true, y_pred : int labels and predictions, one per test sample.
    sensitive : the attribute's value per sample (the groups ``a``).
    classes : the classes of Algorithm 1; default: binary labels -> ``[1]`` (class 1
        positive), otherwise every class in ``y_true`` (one-vs-rest, averaged).
    backend : ``"fairlearn"`` or ``"numpy"`` (see the module docstring).

    Returns
    -------
    dict with ``dpd``, ``eod``, ``tpr_diff``, ``fpr_diff`` (class averages),
    ``n_classes`` and ``n_undefined`` (excluded (class, group, rate) cells).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
    y_true = np.asarray(y_true)
    if classes is None:
        classes = [1] if is_binary(y_true) else np.unique(y_true).tolist()
    rates = (_fairlearn_rates if backend == "fairlearn" else group_rates)(
        y_true, np.asarray(y_pred), np.asarray(sensitive), classes)
    average = class_average(rates["selection_rate"], rates["tpr"], rates["fpr"])
    return {**{k: float(v) for k, v in average.items()}, "n_classes": len(classes),
            "n_undefined": int(np.isnan(rates["tpr"]).sum() + np.isnan(rates["fpr"]).sum())}


def class_average(sel: np.ndarray, tpr: np.ndarray, fpr: np.ndarray) -> dict[str, np.ndarray]:
    """Algorithm 1 over rate arrays ``[groups, ..., classes]``: per class DPD (eq. 1), the TPR
    and FPR differences (eqs. 2, 3) and EOD (eq. 4), each averaged over the classes where it
    is defined; arrays over the middle axes (0-d for ``[groups, classes]``)."""
    dpd_c, _ = _difference(sel)
    tpr_c, _ = _difference(tpr)
    fpr_c, _ = _difference(fpr)
    both = np.stack([tpr_c, fpr_c])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices / means
        eod_c = np.where(np.isnan(both).all(axis=0), np.nan, np.nanmax(both, axis=0))
        return {name: np.nanmean(x, axis=-1) for name, x in
                (("dpd", dpd_c), ("eod", eod_c), ("tpr_diff", tpr_c), ("fpr_diff", fpr_c))}


def algorithm_1_classes(label: np.ndarray) -> list[int]:
    """The classes DPD and EOD average over: ``[1]`` for binary labels (class 1 positive),
    else every class of the test labels (one-vs-rest, Algorithm 1)."""
    return [1] if is_binary(label) else np.unique(label).tolist()


def run_fairness(label: np.ndarray, pred: np.ndarray, attributes: dict[str, np.ndarray],
                 backend: str = "fairlearn") -> list[dict[str, Any]]:
    """One row per sensitive attribute of a run (computed on a Ray worker)."""
    classes = algorithm_1_classes(label)
    return [{"attribute": name, **fairness_metrics(label, pred, values, classes, backend)}
            for name, values in sorted(attributes.items())]


FAIRNESS_COLUMNS = ["dataset", "role", "arch", "teacher_arch", "temperature", "alpha",
                    "attribute", "n_seeds", "acc_mean", "acc_std", "dpd_mean", "dpd_std",
                    "eod_mean", "eod_std", "dpd_ci95_halfwidth", "eod_ci95_halfwidth"]


def fairness_table(runs: pd.DataFrame, per_run: pd.DataFrame) -> pd.DataFrame:
    """``fairness.csv``: mean ± std over seeds (sample std, ddof=1), all in %.

    ``runs`` has one row per run (``test_accuracy`` as a fraction); ``per_run`` one row per
    (run_id, attribute) with ``dpd`` and ``eod`` and, where computed, their bootstrap 95%
    interval ``dpd_low``, ``dpd_high``, ``eod_low``, ``eod_high``
    (:mod:`kdray.analysis.bootstrap`). ``dpd_ci95_halfwidth`` and ``eod_ci95_halfwidth``: the
    half-width (high - low) / 2 of each run's interval, mean over seeds (the sampling noise
    of one run's number; NaN without intervals). Teacher and NDS rows have empty
    ``teacher_arch``, ``temperature`` and ``alpha``.
    """
    df = per_run.merge(runs, on="run_id", how="inner")
    if df.empty:  # no attributes, or no run that did not collapse
        return pd.DataFrame(columns=FAIRNESS_COLUMNS[:1] + ["study"] + FAIRNESS_COLUMNS[1:])
    keys = ["dataset", "study", "role", "arch", "teacher_arch", "temperature", "alpha",
            "attribute"]
    rows = []
    for key, sub in df.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, key))
        row["n_seeds"] = len(sub)
        for name, col in (("acc", "test_accuracy"), ("dpd", "dpd"), ("eod", "eod")):
            x = 100.0 * sub[col].to_numpy(dtype=float)
            row[f"{name}_mean"] = float(np.nanmean(x)) if np.isfinite(x).any() else np.nan
            row[f"{name}_std"] = float(np.nanstd(x, ddof=1)) if np.isfinite(x).sum() > 1 else np.nan
        for name in ("dpd", "eod"):
            half = (100.0 * (sub[f"{name}_high"] - sub[f"{name}_low"]).to_numpy(dtype=float) / 2
                    if f"{name}_low" in sub else np.array([np.nan]))
            row[f"{name}_ci95_halfwidth"] = (float(np.nanmean(half)) if np.isfinite(half).any()
                                             else np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    out = out.assign(_r=out["role"].map(ROLE_ORDER)).sort_values(
        ["dataset", "study", "attribute", "_r", "arch", "teacher_arch", "alpha", "temperature"],
        na_position="first").drop(columns="_r").reset_index(drop=True)
    return out[FAIRNESS_COLUMNS[:1] + ["study"] + FAIRNESS_COLUMNS[1:]]
