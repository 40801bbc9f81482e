"""kdray.analysis.fairness: DPD, EOD (eqs. 1-4), Algorithm 1, undefined rates (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from kdray.analysis.fairness import fairness_metrics, fairness_table, group_rates, is_binary

BACKENDS = ["numpy", "fairlearn"]


def _well_posed(rng, n, k, groups):
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    a = rng.integers(0, groups, n)
    return y, p, a


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_equals_fairlearn(backend):
    rng = np.random.default_rng(0)
    y, p, a = _well_posed(rng, 3000, 2, 3)
    m = fairness_metrics(y, p, a, backend=backend)
    assert m["dpd"] == pytest.approx(demographic_parity_difference(y, p, sensitive_features=a),
                                     abs=1e-12)
    assert m["eod"] == pytest.approx(equalized_odds_difference(y, p, sensitive_features=a),
                                     abs=1e-12)
    assert m["n_classes"] == 1 and m["n_undefined"] == 0


def test_fairlearn_worked_example():
    # docs/fairness.md: per-group TPR .667/.5/1.0, FPR .333/.5/.5, selection .5/.5/.75
    y = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    p = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0])
    a = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    m = fairness_metrics(y, p, a)
    assert m["eod"] == pytest.approx(equalized_odds_difference(y, p, sensitive_features=a))
    assert m["dpd"] == pytest.approx(demographic_parity_difference(y, p, sensitive_features=a))


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiclass_is_algorithm_1_over_fairlearn(backend):
    rng = np.random.default_rng(1)
    y, p, a = _well_posed(rng, 4000, 4, 3)
    m = fairness_metrics(y, p, a, backend=backend)
    dpd = np.mean([demographic_parity_difference(y == c, p == c, sensitive_features=a)
                   for c in range(4)])
    eod = np.mean([equalized_odds_difference(y == c, p == c, sensitive_features=a)
                   for c in range(4)])
    assert m["dpd"] == pytest.approx(dpd, abs=1e-12)
    assert m["eod"] == pytest.approx(eod, abs=1e-12)
    assert m["n_classes"] == 4


def test_algorithm_1_by_hand_on_three_classes():
    # group 0: samples 0-5, group 1: samples 6-11
    y = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0, 0, 0, 2, 1, 2, 2])
    a = np.array([0] * 6 + [1] * 6)
    # class 0: sel 2/6 vs 2/6 -> DPD 0; TPR 1/2 vs 2/2 -> .5; FPR 1/4 vs 0/4 -> .25; EOD .5
    # class 1: sel 3/6 vs 1/6 -> 1/3; TPR 2/2 vs 1/2 -> .5; FPR 1/4 vs 0/4 -> .25; EOD .5
    # class 2: sel 1/6 vs 3/6 -> 1/3; TPR 1/2 vs 2/2 -> .5; FPR 0/4 vs 1/4 -> .25; EOD .5
    m = fairness_metrics(y, p, a)
    assert m["dpd"] == pytest.approx((0 + 1 / 3 + 1 / 3) / 3)
    assert m["eod"] == pytest.approx(0.5)
    assert m["tpr_diff"] == pytest.approx(0.5)
    assert m["fpr_diff"] == pytest.approx(0.25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_without_positives_is_left_out_not_zero(backend):
    # group 2 has no positives: fairlearn counts its TPR as 0.0 and reports EOD = 0.75
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 0, 0, 1, 1, 1, 0, 0, 1, 0])
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    assert equalized_odds_difference(y, p, sensitive_features=a) == pytest.approx(1.0)
    m = fairness_metrics(y, p, a, backend=backend)
    # TPR over groups 0, 1 only: .5 vs 1 -> .5 ; FPR: .5, 0, .5 -> .5 ; EOD = .5
    assert m["tpr_diff"] == pytest.approx(0.5)
    assert m["fpr_diff"] == pytest.approx(0.5)
    assert m["eod"] == pytest.approx(0.5)
    assert m["n_undefined"] == 1
    assert m["dpd"] == pytest.approx(demographic_parity_difference(y, p, sensitive_features=a))


def test_rate_defined_in_fewer_than_two_groups_is_nan_and_skipped_in_the_mean():
    # class 2 occurs only in group 0: its TPR difference is undefined (not 0)
    y = np.array([0, 1, 2, 0, 1, 0, 1, 0])
    p = np.array([0, 1, 2, 1, 1, 0, 0, 0])
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = group_rates(y, p, a, [0, 1, 2])
    assert np.isnan(r["tpr"][1, 2]) and not np.isnan(r["tpr"][0, 2])
    m = fairness_metrics(y, p, a)
    # class 2 EOD = FPR diff only = 0 (group 0 FPR 0/3, group 1 0/4)
    assert np.isfinite(m["eod"])
    one_group = fairness_metrics(y, p, np.zeros_like(a))
    assert np.isnan(one_group["dpd"]) and np.isnan(one_group["eod"])


def test_backends_agree_on_messy_data():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 300)
    y[rng.integers(0, 5, 300) == 0] = 4  # imbalance
    p = rng.integers(0, 6, 300)  # predicts a class that never occurs
    a = rng.integers(0, 7, 300)
    fast, ref = fairness_metrics(y, p, a), fairness_metrics(y, p, a, backend="fairlearn")
    for key in fast:
        assert fast[key] == pytest.approx(ref[key], nan_ok=True, abs=1e-12)


def test_is_binary():
    assert is_binary(np.array([0, 1, 1])) and is_binary(np.array([1, 1]))
    assert not is_binary(np.array([0, 1, 2]))


def test_fairness_table_is_mean_and_std_over_seeds_in_percent():
    runs = pd.DataFrame({"run_id": ["t0", "t1", "d0", "d1"], "dataset": "celeba",
                         "study": "", "role": ["teacher", "teacher", "ds", "ds"],
                         "arch": ["big", "big", "small", "small"],
                         "teacher_arch": [None, None, "big", "big"],
                         "temperature": [np.nan, np.nan, 2.0, 2.0],
                         "alpha": [np.nan, np.nan, 0.8, 0.8],
                         "test_accuracy": [0.9, 0.92, 0.8, 0.84]})
    per_run = pd.DataFrame({"run_id": ["t0", "t1", "d0", "d1"], "attribute": "young",
                            "dpd": [0.1, 0.2, 0.05, 0.05], "eod": [0.3, 0.1, 0.2, 0.4]})
    t = fairness_table(runs, per_run)
    assert list(t["role"]) == ["teacher", "ds"]
    teacher = t.iloc[0]
    assert teacher["n_seeds"] == 2
    assert teacher["acc_mean"] == pytest.approx(91.0)
    assert teacher["acc_std"] == pytest.approx(np.std([90, 92], ddof=1))
    assert teacher["dpd_mean"] == pytest.approx(15.0)
    assert teacher["eod_std"] == pytest.approx(np.std([30, 10], ddof=1))
    assert pd.isna(teacher["temperature"]) and pd.isna(teacher["teacher_arch"])
    assert t.iloc[1]["dpd_std"] == pytest.approx(0.0)


def test_weighted_cells_benchmark_finds_the_rows_rates_bit_for_bit():
    """benchmarks/fairness_cells.py: fairlearn over every stacked row and over the weighted
    distinct cells (what the fairlearn backend does) give the same rates; the small sample
    leaves some (group, class) without positives, the 0/0 case included."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "fairness_cells.py"),
                          "--samples", "300", "--repeat", "1"], capture_output=True, text=True,
                         timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "300 samples x 10 classes, 10 groups: rates bit-identical" in out.stdout
    assert "ratio:" in out.stdout
