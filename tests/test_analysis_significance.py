"""kdray.analysis.significance: eq. 8 normalisation, Welch tests, degenerate samples, BH (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from kdray.analysis.groups import Experiment
from kdray.analysis.significance import (bh_adjust, count_significant, normalised_class_accuracy,
                                   significance_tables, welch_tests)


def test_normalised_class_accuracy_ratio_and_difference():
    correct = np.array([[9, 5], [8, 8]])
    total = np.array([[10, 10], [10, 10]])
    # run 0: beta^c = .9, .5; beta^M = .7 ; run 1: .8, .8; .8
    np.testing.assert_allclose(normalised_class_accuracy(correct, total, "ratio"),
                               [[0.9 / 0.7, 0.5 / 0.7], [1.0, 1.0]])
    np.testing.assert_allclose(normalised_class_accuracy(correct, total, "difference"),
                               [[0.2, -0.2], [0.0, 0.0]], atol=1e-15)
    zero = normalised_class_accuracy(np.array([[0, 0]]), total[:1], "ratio")
    assert np.isnan(zero).all()  # beta^M = 0: undefined, never inf
    with pytest.raises(ValueError, match="normalisation: 'log'"):
        normalised_class_accuracy(correct, total, "log")


def test_welch_equals_scipy_on_regular_data():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 0.1, (5, 30)), rng.normal(1.05, 0.2, (4, 30))
    stat, p, degenerate = welch_tests(a, b)
    for k in range(30):
        r = stats.ttest_ind(a[:, k], b[:, k], equal_var=False)
        assert stat[k] == pytest.approx(r.statistic, rel=1e-12)
        assert p[k] == pytest.approx(r.pvalue, rel=1e-12)
    assert not degenerate.any()


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_degenerate_samples_never_give_p_zero():
    cols = {
        "both constant, equal": ([1.0] * 5, [1.0] * 5),
        "both constant, different": ([1.0] * 5, [2.0] * 5),
        "float noise only": ([0.1 + 0.2] * 3 + [0.3] * 2, [0.3] * 5),  # scipy: p = 0.034
        "one constant": ([1.0] * 5, [0.9, 1.0, 1.1, 0.95, 1.05]),
        "undefined": ([np.nan] + [1.0] * 4, [1.0] * 5),
    }
    a = np.array([v[0] for v in cols.values()]).T
    b = np.array([v[1] for v in cols.values()]).T
    stat, p, degenerate = welch_tests(a, b)
    assert (stat[0], p[0], degenerate[0]) == (0.0, 1.0, False)
    assert np.isnan(stat[1]) and np.isnan(p[1]) and degenerate[1]
    assert (stat[2], p[2], degenerate[2]) == (0.0, 1.0, False)
    ref = stats.ttest_ind(a[:, 3], b[:, 3], equal_var=False)
    assert p[3] == pytest.approx(ref.pvalue) and not degenerate[3]
    assert np.isnan(p[4]) and degenerate[4]
    assert count_significant(p, 0.05) == 0
    assert not (p == 0).any()
    with pytest.raises(ValueError, match=">= 2 seeds per side, got 1 and 5"):
        welch_tests(a[:1], b)


def test_bh_matches_hand_computation_and_keeps_nan():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.2])
    finite = np.array([0.01, 0.04, 0.03, 0.2])
    m = len(finite)
    order = np.argsort(finite)
    adj = finite[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    hand = np.empty(m)
    hand[order] = np.minimum(adj, 1)
    out = bh_adjust(p)
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3, 4]], hand)


def test_no_effect_gives_level_share_of_false_positives_and_bh_removes_them():
    rng = np.random.default_rng(1)
    k = 4000
    ds, ref = rng.normal(1, 0.05, (5, k)), rng.normal(1, 0.05, (5, k))
    _, p, _ = welch_tests(ds, ref)
    share = count_significant(p, 0.05) / k
    # Welch's test is slightly conservative at n = 5 vs 5; binomial sd of the share is ~0.0035
    assert 0.03 <= share <= 0.065
    assert count_significant(bh_adjust(p), 0.05) <= 5


def test_planted_effects_are_found():
    rng = np.random.default_rng(2)
    k, planted = 500, np.arange(0, 500, 25)  # 20 affected classes
    ds, ref = rng.normal(1, 0.02, (5, k)), rng.normal(1, 0.02, (5, k))
    ds[:, planted] -= 0.2
    _, p, _ = welch_tests(ds, ref)
    assert (p[planted] <= 0.05).all()
    p_bh = bh_adjust(p)
    assert (p_bh[planted] <= 0.05).all()
    assert count_significant(p_bh, 0.05) <= len(planted) + 3


def _counts(rng, acc, n_runs, per_class=50):
    k = len(acc)
    correct = rng.binomial(per_class, np.clip(acc, 0, 1), size=(n_runs, k))
    return np.arange(k), correct, np.full((n_runs, k), per_class)


def test_significance_tables_equal_direct_scipy_and_list_too_few_seeds():
    rng = np.random.default_rng(3)
    k = 40
    acc_ds = np.full(k, 0.8)
    acc_ds[:5] = 0.3
    counts, ids = {}, {}
    for role, acc, n in (("ds", acc_ds, 5), ("nds", np.full(k, 0.8), 5),
                         ("teacher", np.full(k, 0.9), 1)):
        ids[role] = tuple(f"{role}{i}" for i in range(n))
        for rid in ids[role]:
            classes, c, t = _counts(rng, acc, 1)
            counts[rid] = (classes, c[0], t[0])
    e = Experiment("toy", "", "big", "small", 4.0, 0.8, ids["ds"], ids["nds"], ids["teacher"])
    sig, cls, few = significance_tables([e], counts, level=0.05)
    assert list(sig["comparison"]) == ["ds_vs_nds"]
    assert few[["comparison", "n_seeds_ds", "n_seeds_ref"]].values.tolist() == [
        ["ds_vs_teacher", 5, 1]]
    # the same numbers, straight through scipy
    def norm(rs):
        return np.stack([counts[r][1] / counts[r][2] / (counts[r][1].sum() / counts[r][2].sum())
                         for r in rs])

    p = stats.ttest_ind(norm(ids["ds"]), norm(ids["nds"]), axis=0, equal_var=False).pvalue
    assert sig["n_significant"].iloc[0] == int((p <= 0.05).sum())
    assert sig["n_significant_bh"].iloc[0] == int(
        (stats.false_discovery_control(p, method="bh") <= 0.05).sum())
    assert set(range(5)) <= set(cls.loc[cls["pvalue"] <= 0.05, "class"])
    np.testing.assert_allclose(cls["pvalue"], p)
    ds_acc = [100 * counts[r][1].sum() / counts[r][2].sum() for r in ids["ds"]]
    assert sig["ds_acc_mean"].iloc[0] == pytest.approx(np.mean(ds_acc))
    assert sig["ds_acc_std"].iloc[0] == pytest.approx(np.std(ds_acc, ddof=1))
