"""The rule engine on its own (no Ray): tests across seeds (analysis.seed_tests), Holm and power
(analysis.verdicts) against scipy and statsmodels, the collapse rule (kdray.collapse), and the
claims on hand-built frames (C7/C8's permutation test)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdray.analysis import seed_tests, verdicts
from kdray.analysis.claims import ClaimData, judge
from kdray.analysis.groups import Experiment, model_key
from kdray.collapse import collapse_reason


# -- tests across seeds --------------------------------------------------------------------------
def test_t_across_seeds_is_scipys_one_sample_t_test_with_its_interval():
    x = np.array([-0.9, -1.0, -0.5, -1.0, np.nan])
    res = stats.ttest_1samp(x[:4], 0.0)
    ci = res.confidence_interval(0.95)
    t = seed_tests.t_across_seeds(x)
    assert (t.n, t.statistic, t.pvalue, t.low, t.high) == (4, res.statistic, res.pvalue,
                                                           ci.low, ci.high)
    assert (t.effect, t.d, t.reason) == (pytest.approx(-0.85), pytest.approx(
        -0.85 / np.std(x[:4], ddof=1)), "")


@pytest.mark.parametrize("x, p, reason", [
    ([1.0, 2.0], math.nan, "2 seed(s) with data; needs >= 3"),
    ([0.0, 0.0, 0.0], math.nan, "no seed shows an effect"),
    ([0.1 + 0.2 - 0.3] * 4, math.nan, "no seed shows an effect"),  # float noise is 0
    ([-1.0] * 5, 0.0, "every seed gives -1: no spread across seeds, t infinite"),
])
def test_degenerate_seeds_give_a_reason(x, p, reason):
    t = seed_tests.t_across_seeds(x)
    assert t.reason == reason
    assert (math.isnan(t.pvalue) and math.isnan(p)) or t.pvalue == p


def test_paired_differences_pair_each_seed_with_its_own_reference():
    ds = {0: [10.0, 20.0], 1: [5.0, math.nan], 3: [1.0]}  # seed 3 has no reference
    ref = {0: 12.0, 1: 7.0, 2: 1.0}  # seed 2 has no DS
    assert seed_tests.paired_differences(ds, ref).tolist() == [3.0, -2.0]


def test_seed_rho_per_seed_needs_three_temperatures_and_ranks_ties():
    assert seed_tests.seed_rho([1, 2, 4], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert seed_tests.seed_rho([1, 2, 4], [2.0, 2.0, 2.0]) == 0.0  # no order to rank
    assert math.isnan(seed_tests.seed_rho([1, 2, 4], [1.0, math.nan, 2.0]))
    t, y = [1, 2, 3, 4, 5], [5.0, 3.0, 4.0, 1.0, 2.0]
    assert seed_tests.seed_rho(t, y) == stats.spearmanr(t, y).statistic
    rhos = seed_tests.seed_rhos({0: [(1, 3.0), (2, 2.0), (4, 1.0)], 1: [(1, 1.0), (2, 2.0)]})
    assert rhos.tolist() == [pytest.approx(-1.0)]


def test_mean_interval_is_the_t_interval_over_seeds():
    x = [1.0, 2.0, 4.0]
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert seed_tests.mean_interval(x) == (pytest.approx(7 / 3), ci.low, ci.high, 3)
    assert seed_tests.mean_interval([2.0, 2.0]) == (2.0, 2.0, 2.0, 2)


# -- Holm and power ------------------------------------------------------------------------------
def _rows(pvalues, in_paper, effects, d=None, verdict=""):
    n = len(pvalues)
    return pd.DataFrame({"claim": "C3", "dataset": "toy", "study": "", "pvalue": pvalues,
                         "in_paper": in_paper, "effect": effects,
                         "cohens_d": d if d is not None else [math.nan] * n,
                         "verdict": verdict, "reason": ""})


def test_holm_is_statsmodels_per_family_and_decides_the_verdict():
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.02, 0.04, 0.30, 0.01, 0.03]
    rows = verdicts.decide(_rows(p, [True, True, True, True, False, False],
                                 [-0.5, -0.5, 0.5, -0.1, -0.5, -0.5]), {"C3": -1})
    paper, own = multipletests(p[:4], method="holm")[1], multipletests(p[4:], method="holm")[1]
    assert rows["pvalue_holm"].tolist() == pytest.approx(list(paper) + list(own))
    assert rows["family"].tolist() == ["paper"] * 4 + ["kdray"] * 2
    assert rows["family_size"].tolist() == [4] * 4 + [2] * 2
    # raw 0.02 and 0.04 pass 0.05 alone; after Holm 0.06 and 0.08 do not
    assert rows["verdict"].tolist() == ["reproduced", "inconclusive", "inconclusive",
                                        "inconclusive", "reproduced", "reproduced"]


def test_seeds_for_power_are_statsmodels_at_the_familys_level():
    from statsmodels.stats.power import TTestPower

    rows = verdicts.decide(_rows([0.2, 0.5, math.nan], [True] * 3, [0.3, 0.1, 0.0],
                                 d=[0.7, 0.1, math.nan]), {"C3": -1})
    want = TTestPower().solve_power(effect_size=0.7, alpha=0.05 / 2 / 2, power=0.8,
                                    alternative="larger")  # two-sided at 0.05 / 2, far tail out
    two_sided = TTestPower().solve_power(effect_size=0.7, alpha=0.05 / 2, power=0.8,
                                         alternative="two-sided")
    assert math.ceil(two_sided) == math.ceil(want)
    assert rows["seeds_for_power"].iloc[0] == math.ceil(want)
    assert rows["seeds_for_power"].iloc[1] > 500 and math.isnan(rows["seeds_for_power"].iloc[2])
    assert math.isinf(verdicts.seeds_for_power(1e-6, 0.05))
    assert verdicts.seeds_for_power(20.0, 0.05 / 7) == 3  # the fewest the rules test


# -- the collapse rule and the sweep's summary ---------------------------------------------------
def test_a_run_at_chance_has_collapsed():
    assert collapse_reason([1.0] + [0.0] * 9) == (
        "balanced accuracy 10.00 % < 19.00 % (chance 10.00 % + 0.1 x (1 - chance))")
    assert collapse_reason({"0": 0.6, "1": 0.5}) == ""  # 55 %: at the bar, not below
    assert collapse_reason([0.3] * 10) == ""
    assert collapse_reason([None, 1.0, 0.0, 0.0]) != ""  # 3 classes with test samples


def test_the_sweeps_summary_counts_collapsed_runs_beside_failed_ones():
    from kdray.sweep.driver import SweepReport, StageResult

    report = SweepReport()
    report.add(StageResult(ran=["a", "b"], failed={"c": "NaN loss"},
                           collapsed={"b": "balanced accuracy 10.00 % < 19.00 %"}))
    text = report.format()
    assert text.startswith("sweep: 2 ran, 0 skipped (already complete), 1 failed, "
                           "0 not launched, 1 collapsed, ")
    assert "  COLLAPSED b: balanced accuracy 10.00 % < 19.00 %" in text and report.ok is False


# -- C7/C8 on hand-built frames ------------------------------------------------------------------
def _count_store(temps, seeds=4, k=6):
    """One pair, no fairness: DS class accuracies drift away from the NDS's on more classes
    as T rises (so #SC rises); counts per run of 100 samples per class."""
    rng = np.random.default_rng(1)
    exps, rows, counts = [], [], {}
    total = np.full(k, 100)

    def add(rid, role, seed, acc):
        counts[rid] = (np.arange(k), np.round(np.clip(acc, 0, 1) * 100).astype(int), total)
        rows.append({"run_id": rid, "seed": seed, "test_accuracy": counts[rid][1].sum() / 600})

    for s in range(seeds):
        add(f"nds{s}", "nds", s, 0.8 + rng.normal(0, 0.02, k))
        add(f"teacher{s}", "teacher", s, 0.9 + rng.normal(0, 0.02, k))
    for i, t in enumerate(temps):
        shift = np.where(np.arange(k) < i, 0.15, 0.0)
        for s in range(seeds):
            add(f"ds{t:g}-{s}", "ds", s, 0.8 + shift + rng.normal(0, 0.02, k))
        exps.append(Experiment("cifar100", "", "resnet56", "resnet20", t, 0.8,
                               tuple(f"ds{t:g}-{s}" for s in range(seeds)),
                               tuple(f"nds{s}" for s in range(seeds)),
                               tuple(f"teacher{s}" for s in range(seeds))))
    fair = pd.DataFrame(columns=["run_id", "attribute", "dpd", "eod"])
    return exps, pd.DataFrame(rows), fair, counts


def test_c7_permutes_temperatures_within_seeds_as_scipy_does(monkeypatch):
    monkeypatch.setattr(seed_tests, "N_PERMUTATIONS", 199)  # the reference below is slow
    temps = (2.0, 4.0, 6.0, 8.0, 10.0)
    exps, runs, fair, counts = _count_store(temps)
    c = judge(ClaimData(exps, runs, fair, counts))
    c7 = c[(c["claim"] == "C7") & (c["study"] == "")].iloc[0]
    norm = {r: counts[r][1] / 100 / (counts[r][1].sum() / 600) for r in counts}
    ds = np.stack([[norm[f"ds{t:g}-{s}"] for t in temps] for s in range(4)])  # [S, T, K]
    nds = np.stack([norm[f"nds{s}"] for s in range(4)])

    def rho(*orders):
        n_sc = [int(np.sum(stats.ttest_ind(np.stack([ds[s, o[i]] for s, o in enumerate(orders)]),
                                           nds, equal_var=False).pvalue <= 0.05))
                for i in range(len(temps))]
        return stats.spearmanr(temps, n_sc).statistic if np.ptp(n_sc) else 0.0

    want = stats.permutation_test(tuple(np.arange(5) for _ in range(4)), rho,
                                  permutation_type="pairings", vectorized=False,
                                  n_resamples=199, rng=np.random.default_rng(0))
    assert (c7["statistic"], c7["pvalue"]) == pytest.approx((want.statistic, want.pvalue))
    assert c7["statistic"] > 0.8 and c7["test"] == "count_trend" and c7["in_paper"]
    assert c7["effect_unit"] == "rho" and math.isnan(c7["effect_low"])


def test_c7_needs_three_temperatures_and_a_lost_cell_is_inconclusive():
    exps, runs, fair, counts = _count_store((2.0, 4.0))
    c = judge(ClaimData(exps, runs, fair, counts))
    c7 = c[(c["claim"] == "C7") & (c["dataset"] == "cifar100")].iloc[0]
    assert c7["verdict"] == "not run" and "needs >= 3 temperatures in 2-10" in c7["reason"]
    lost = {model_key("cifar100", "", "ds", "resnet20", "resnet56", 4.0, 0.8): (1, 3)}
    c = judge(ClaimData(exps, runs, fair, counts, lost))
    c1 = c[(c["claim"] == "C1") & (c["dataset"] == "cifar100")].iloc[0]
    assert c1["verdict"] == "inconclusive"
    assert c1["reason"] == "collapsed runs: DS T=4 2 of 6 seeds"
    # fairness claims do not apply to a pair without sensitive attributes
    assert not c[c["dataset"] == "cifar100"]["claim"].isin(["C2", "C3", "C6"]).any()
