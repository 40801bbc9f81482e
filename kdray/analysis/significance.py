"""Which classes does distillation affect? Welch t-tests on normalised class accuracy (paper eq. 8).

For a run, β^c is the accuracy on the test samples of class ``c`` and β^M the accuracy over
all classes. The paper's null hypothesis for class ``c_i`` at temperature ``T`` (eq. 8) is

    H0: β^{c_i} / β^M  =  β_T^{c_i} / β_T^M,        H1: they differ,

tested across seeds with a two-tailed Welch t-test (``scipy.stats.ttest_ind(equal_var=False)``)
for DS vs NDS (#SC) and DS vs teacher (#TC); a class is significant when p <= level (0.05).
``normalisation="difference"`` tests β^c - β^M instead (Hooker et al.'s relative change).
With hundreds of classes per test the paper's uncorrected count has many false positives
(about ``level`` × classes under the null), so the Benjamini-Hochberg adjusted count
(``scipy.stats.false_discovery_control``, per group and comparison) is reported beside it.

Degenerate samples (never a spurious p = 0)
    Class accuracies are computed from integer counts, so runs with equal counts give
    bit-identical normalised accuracies. A side has *zero spread* when
    ``ptp(x) <= 1e-12 * max(1, max|x|)`` (this also catches float noise such as
    ``0.1 + 0.2`` vs ``0.3``, where scipy would report p = 0.034).

    - both sides zero spread, equal means: ``statistic = 0``, ``p = 1`` (no evidence);
    - both sides zero spread, different means: the t statistic is ±inf and scipy would say
      p = 0, which is an artefact of zero variance, not evidence; ``statistic = p = NaN``,
      not counted as significant, excluded from the BH family, counted in ``n_degenerate``;
    - a normalised accuracy that is undefined (β^M = 0 with ``ratio``): NaN, ``n_degenerate``;
    - one side constant, the other varying: an ordinary Welch test.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from kdray.analysis.groups import COMPARISONS, ROLE_ORDER, Experiment

NORMALISATIONS = ("ratio", "difference")
ZERO_SPREAD = 1e-12

GROUP_COLUMNS = ["dataset", "teacher_arch", "student_arch", "temperature", "alpha", "comparison"]
SIGNIFICANCE_COLUMNS = GROUP_COLUMNS + ["n_classes", "n_seeds_ds", "n_seeds_ref",
                                        "n_significant", "n_significant_bh", "ds_acc_mean",
                                        "ds_acc_std"]
CLASS_TEST_COLUMNS = GROUP_COLUMNS + ["class", "statistic", "pvalue", "pvalue_bh",
                                      "ds_norm_acc_mean", "ref_norm_acc_mean"]


def normalised_class_accuracy(correct: np.ndarray, total: np.ndarray,
                              normalisation: str = "ratio") -> np.ndarray:
    """β^c/β^M (``ratio``, eq. 8) or β^c - β^M (``difference``) per run (rows) and class.

    ``correct`` and ``total`` are [runs, classes] integer counts; β^c = correct/total,
    β^M = Σ_c correct / Σ_c total. NaN where undefined (a class with no samples, β^M = 0).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation: {normalisation!r} is not one of {NORMALISATIONS}")
    correct, total = np.atleast_2d(correct).astype(float), np.atleast_2d(total).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta_c = correct / total
        beta_m = correct.sum(axis=1, keepdims=True) / total.sum(axis=1, keepdims=True)
        out = beta_c / beta_m if normalisation == "ratio" else beta_c - beta_m
    return np.where(np.isfinite(out), out, np.nan)


MODEL_COLUMNS = ["dataset", "study", "role", "arch", "teacher_arch", "temperature", "alpha"]
CLASS_ACCURACY_COLUMNS = MODEL_COLUMNS + ["class", "n_seeds", "acc_mean", "acc_std"]


def class_accuracy_table(runs: pd.DataFrame, counts: Mapping[str, tuple]) -> pd.DataFrame:
    """``class_accuracy.csv``: β^c = correct_c / total_c in %, mean and sample std (ddof=1;
    NaN for one seed) over the seeds of each model (the data of the paper's Fig. 1).

    One row per (dataset, study, role, arch, teacher_arch, temperature, alpha) and class;
    ``counts[run_id] = (classes, correct, total)``. Every run of a study has the same classes.
    """
    frames = []
    for key, sub in runs.groupby(MODEL_COLUMNS, dropna=False, sort=False):
        ids = sub["run_id"].tolist()
        classes = counts[ids[0]][0]
        acc = 100.0 * np.stack([counts[r][1] / counts[r][2] for r in ids])  # [seeds, K]
        frames.append(pd.DataFrame({
            **{k: [v] * len(classes) for k, v in zip(MODEL_COLUMNS, key)},
            "class": np.asarray(classes, dtype=np.int64), "n_seeds": len(ids),
            "acc_mean": acc.mean(axis=0),
            "acc_std": acc.std(axis=0, ddof=1) if len(ids) > 1 else np.nan}))
    if not frames:
        return pd.DataFrame(columns=CLASS_ACCURACY_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    order = out["role"].map(ROLE_ORDER)
    out = out.assign(_r=order).sort_values(
        ["dataset", "study", "_r", "arch", "teacher_arch", "alpha", "temperature", "class"],
        na_position="first", kind="stable").drop(columns="_r").reset_index(drop=True)
    return out[CLASS_ACCURACY_COLUMNS]


def _zero_spread(x: np.ndarray) -> np.ndarray:
    scale = np.maximum(1.0, np.nanmax(np.abs(x), axis=0))
    return np.ptp(x, axis=0) <= ZERO_SPREAD * scale


def welch_tests(ds: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-tailed Welch t-test per class (column) of ``ds`` [n_ds, K] vs ``ref`` [n_ref, K].

    Returns ``(statistic, pvalue, degenerate)``; see the module docstring for degenerate
    classes (``degenerate`` is True where no p-value exists). Needs >= 2 rows per side.
    """
    ds, ref = np.asarray(ds, float), np.asarray(ref, float)
    if len(ds) < 2 or len(ref) < 2:
        raise ValueError(f"welch_tests: needs >= 2 seeds per side, got {len(ds)} and {len(ref)}")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(ds, ref, axis=0, equal_var=False)
        stat, p = np.array(res.statistic, float, ndmin=1), np.array(res.pvalue, float, ndmin=1)
        undefined = np.isnan(ds).any(axis=0) | np.isnan(ref).any(axis=0)
        both_flat = _zero_spread(ds) & _zero_spread(ref) & ~undefined
        diff = np.abs(np.nanmean(ds, axis=0) - np.nanmean(ref, axis=0))
        scale = np.maximum(1.0, np.maximum(np.abs(ds).max(axis=0), np.abs(ref).max(axis=0)))
    same = both_flat & (diff <= ZERO_SPREAD * scale)
    stat = np.where(same, 0.0, stat)
    p = np.where(same, 1.0, p)
    degenerate = undefined | (both_flat & ~same)
    stat = np.where(degenerate, np.nan, stat)
    p = np.where(degenerate, np.nan, p)
    return stat, p, degenerate


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the finite entries; NaN stays NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def count_significant(p: np.ndarray, level: float) -> int:
    """Number of p <= level (NaN never counts)."""
    p = np.asarray(p, float)
    return int(np.sum(np.isfinite(p) & (p <= level)))


def significance_tables(exps: Sequence[Experiment], counts: Mapping[str, tuple],
                        level: float = 0.05, normalisation: str = "ratio"
                        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``significance.csv``, ``class_tests.parquet`` and the groups with too few seeds.

    ``counts[run_id] = (classes, correct, total)`` from the workers (integer arrays over the
    run's test classes; every run of a study has the same classes, checked by fingerprint).
    A comparison with fewer than 2 runs on a side is listed in the third table, not tested.
    """
    if not 0 < level < 1:
        raise ValueError(f"level: {level!r} is not in (0, 1)")
    sig_rows, class_frames, too_few = [], [], []
    for e in exps:
        base = {"dataset": e.dataset, "study": e.study, "teacher_arch": e.teacher_arch,
                "student_arch": e.student_arch, "temperature": e.temperature, "alpha": e.alpha}
        for comparison, ref_role, _ in COMPARISONS:
            ref_runs = e.nds if ref_role == "nds" else e.teacher
            row = {**base, "comparison": comparison}
            if len(e.ds) < 2 or len(ref_runs) < 2:
                too_few.append({**row, "n_seeds_ds": len(e.ds), "n_seeds_ref": len(ref_runs),
                                "reference": ref_role})
                continue
            classes = counts[e.ds[0]][0]
            ds_c, ds_t = (np.stack([counts[r][i] for r in e.ds]) for i in (1, 2))
            ref_c, ref_t = (np.stack([counts[r][i] for r in ref_runs]) for i in (1, 2))
            ds_n = normalised_class_accuracy(ds_c, ds_t, normalisation)
            ref_n = normalised_class_accuracy(ref_c, ref_t, normalisation)
            stat, p, degenerate = welch_tests(ds_n, ref_n)
            p_bh = bh_adjust(p)
            ds_acc = 100.0 * ds_c.sum(axis=1) / ds_t.sum(axis=1)
            sig_rows.append({**row, "n_classes": len(classes), "n_seeds_ds": len(e.ds),
                             "n_seeds_ref": len(ref_runs),
                             "n_significant": count_significant(p, level),
                             "n_significant_bh": count_significant(p_bh, level),
                             "ds_acc_mean": float(ds_acc.mean()),
                             "ds_acc_std": float(ds_acc.std(ddof=1)),
                             "n_degenerate": int(degenerate.sum())})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ds_mean, ref_mean = np.nanmean(ds_n, axis=0), np.nanmean(ref_n, axis=0)
            class_frames.append(pd.DataFrame({
                **{k: [v] * len(classes) for k, v in row.items()},
                "class": np.asarray(classes, dtype=np.int64), "statistic": stat, "pvalue": p,
                "pvalue_bh": p_bh, "ds_norm_acc_mean": ds_mean, "ref_norm_acc_mean": ref_mean}))
    sig_cols = SIGNIFICANCE_COLUMNS[:1] + ["study"] + SIGNIFICANCE_COLUMNS[1:] + ["n_degenerate"]
    cls_cols = CLASS_TEST_COLUMNS[:1] + ["study"] + CLASS_TEST_COLUMNS[1:]
    sig = pd.DataFrame(sig_rows, columns=sig_cols)
    cls = (pd.concat(class_frames, ignore_index=True) if class_frames
           else pd.DataFrame(columns=cls_cols))[cls_cols]
    few = pd.DataFrame(too_few, columns=sig_cols[:8] + ["reference", "n_seeds_ds", "n_seeds_ref"])
    return sig, cls, few
