"""kdray.analysis.bootstrap: the bootstrap 95% interval of a run's DPD and EOD (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate

from kdray.analysis.bootstrap import (add_intervals, bootstrap_draws, cell_metrics, fairness_interval,
                                cell_counts)
from kdray.analysis.fairness import fairness_metrics, run_fairness


def _binary(n: int, groups: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, groups, n)
    y = (rng.random(n) < 0.4 + 0.1 * a).astype(int)  # base rate and accuracy differ by group
    p = np.where(rng.random(n) < 0.8 - 0.05 * a, y, 1 - y)
    return y, p, a


def _multiclass(n: int, k: int, groups: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    y, a = rng.integers(0, k, n), rng.integers(0, groups, n)
    p = np.where(rng.random(n) < 0.9, y, rng.integers(0, k, n))
    return y, p, a


@pytest.mark.parametrize("data, classes", [(_binary(2000, 3), [1]),
                                           (_multiclass(3000, 10, 10), list(range(10)))])
def test_the_observed_test_set_gives_the_point_value(data, classes):
    """One 'resample' that is the test set itself: the same DPD, EOD, TPR/FPR differences as
    fairness_metrics (Algorithm 1, the undefined-rate rule), exactly."""
    y, p, a = data
    cells, counts = cell_counts(y, p, a)
    got = cell_metrics(cells, counts[None], classes)
    want = fairness_metrics(y, p, a, classes, backend="numpy")
    for k in ("dpd", "eod", "tpr_diff", "fpr_diff"):
        assert got[k].shape == (1,)
        assert got[k][0] == pytest.approx(want[k], abs=1e-15)


def test_interval_of_one_binary_metric_matches_fairlearn_metricframe():
    """On a single binary metric (where fairlearn's per-metric quantiles are the whole
    story: the selection-rate and the TPR difference) the vectorised bootstrap and
    MetricFrame's n_boot agree up to Monte-Carlo error. MetricFrame's 200 resamples carry
    most of it: on this data its quantiles, with random_state 0-5, stayed within 0.23
    half-widths of ours (2,000 resamples)."""
    y, p, a = _binary(3000, 3)
    mf = MetricFrame(metrics={"dpd": selection_rate, "tpr_diff": true_positive_rate},
                     y_true=y, y_pred=p, sensitive_features=a, n_boot=200,
                     ci_quantiles=[0.025, 0.975], random_state=0)
    mf_low, mf_high = mf.difference_ci()
    draws = bootstrap_draws(y, p, a, [1], n_boot=2000)
    for metric in ("dpd", "tpr_diff"):
        low, high = np.quantile(draws[metric], [0.025, 0.975])
        half = (mf_high[metric] - mf_low[metric]) / 2
        assert half > 0.01
        assert low == pytest.approx(mf_low[metric], abs=0.3 * half)
        assert high == pytest.approx(mf_high[metric], abs=0.3 * half)


def test_interval_brackets_the_point_value_on_a_large_test_set():
    y, p, a = _binary(20000, 2)
    point = fairness_metrics(y, p, a, [1])
    ci = fairness_interval(y, p, a, [1])
    for m in ("dpd", "eod"):
        assert ci[f"{m}_low"] < point[m] < ci[f"{m}_high"]
        assert ci[f"{m}_high"] - ci[f"{m}_low"] < 0.05


def test_deterministic_and_seeded():
    y, p, a = _multiclass(5000, 10, 10)
    first = fairness_interval(y, p, a, list(range(10)))
    assert fairness_interval(y, p, a, list(range(10))) == first
    assert fairness_interval(y, p, a, list(range(10)), seed=1) != first
    assert first["eod_low"] < first["eod_high"] and first["dpd_low"] < first["dpd_high"]


def test_more_test_samples_less_noise():
    small, large = (fairness_interval(*_binary(n, 2), [1]) for n in (1000, 16000))
    assert (large["eod_high"] - large["eod_low"]) < 0.5 * (small["eod_high"] - small["eod_low"])


def test_added_to_each_attribute_row_of_a_run():
    y, p, a = _multiclass(2000, 4, 3)
    attrs = {"color": a, "texture": (a + 1) % 3}
    rows = add_intervals(run_fairness(y, p, attrs, "numpy"), y, p, attrs)
    assert [r["attribute"] for r in rows] == ["color", "texture"]
    for r in rows:
        assert r == {**r, **fairness_interval(y, p, attrs[r["attribute"]], [0, 1, 2, 3])}
        assert {"dpd", "eod", "dpd_low", "dpd_high", "eod_low", "eod_high"} <= set(r)


def test_bad_n_boot_is_refused():
    with pytest.raises(ValueError, match="n_boot: 0"):
        bootstrap_draws([0, 1], [0, 1], [0, 1], [1], n_boot=0)
