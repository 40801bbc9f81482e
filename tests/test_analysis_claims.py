"""analysis.claims: the paper's claims, judged by fixed rules (scipy's Welch and Spearman)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from scipy import stats

import analysis
from analysis.claims import CLAIMS, COLUMNS, judge, spearman, verdict, welch
from analysis.groups import Experiment
from analysis_store import write_fairness_study
from kdray.store import Store

TEMPS = (2.0, 6.0, 10.0)
# EOD planted per model (DPD = EOD / 4): falling, rising and no trend with T
STORES = {
    "falling": {"teacher": 0.04, "nds": 0.20, 2.0: 0.16, 6.0: 0.10, 10.0: 0.04},
    "rising": {"teacher": 0.04, "nds": 0.20, 2.0: 0.04, 6.0: 0.10, 10.0: 0.16},
    "flat": {"teacher": 0.04, "nds": 0.20, 2.0: 0.10, 6.0: 0.14, 10.0: 0.10},
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, ray_local):
    root = str(tmp_path_factory.mktemp("claims") / "store")
    made = {d: write_fairness_study(root, d, gap) for d, gap in STORES.items()}
    result = analysis.run(root, wandb_mode="disabled", figures=False)
    return root, made, result


def _verdict(result, dataset: str, claim: str, metric: str) -> pd.Series:
    c = result.claims
    row = c[(c["dataset"] == dataset) & (c["claim"] == claim) & (c["metric"] == metric)]
    assert len(row) == 1
    return row.iloc[0]


@pytest.mark.parametrize("dataset, expected", [("falling", "reproduced"),
                                               ("rising", "contradicted"),
                                               ("flat", "inconclusive")])
def test_eod_trend_with_temperature_decides_c3_and_c4(planted, dataset, expected):
    _, _, result = planted
    for claim, metric in (("C3", "eod"), ("C4", "dpd")):
        row = _verdict(result, dataset, claim, metric)
        assert row["verdict"] == expected, row.to_dict()
        assert row["n"] == 9 and row["temperatures"] == "{2, 6, 10}"
        assert row["attribute"] == "young" and row["study"] == ""


def test_welch_and_spearman_are_scipys_on_the_seed_level_metric(planted):
    root, made, result = planted
    store = Store(root)

    def fairness(run_id: str) -> tuple[float, float, float]:
        df = pq.read_table(io.BytesIO(store.read_bytes(store.run_path(
            run_id, "predictions.parquet")))).to_pandas()
        y, p, a = df["label"], df["pred"], df["attr_young"]
        return (100 * equalized_odds_difference(y, p, sensitive_features=a),
                100 * demographic_parity_difference(y, p, sensitive_features=a),
                100 * (y == p).mean())

    ds = {r: fairness(r) for r in made["falling"]["ds"]}
    temps = [float(r.split("-T")[1].split("-")[0]) for r in ds]
    nds = [fairness(r) for r in made["falling"]["nds"]]
    rho = stats.spearmanr(temps, [v[0] for v in ds.values()])
    row = _verdict(result, "falling", "C3", "eod")
    assert (row["statistic"], row["pvalue"]) == pytest.approx((rho.statistic, rho.pvalue),
                                                              rel=1e-9)
    for metric, i in (("eod", 0), ("dpd", 1)):
        t = stats.ttest_ind([v[i] for v in ds.values()], [v[i] for v in nds], equal_var=False)
        row = _verdict(result, "falling", "C2", metric)
        assert (row["statistic"], row["pvalue"]) == pytest.approx((t.statistic, t.pvalue),
                                                                  rel=1e-9)
        assert (row["n"], row["n_ref"], row["verdict"]) == (9, 3, "reproduced")
    t = stats.ttest_ind([v[2] for v in ds.values()], [v[2] for v in nds], equal_var=False)
    row = _verdict(result, "falling", "C1", "test_accuracy")
    assert (row["statistic"], row["pvalue"]) == pytest.approx((t.statistic, t.pvalue), rel=1e-9)


def test_claims_without_their_data_are_not_run(planted):
    _, _, result = planted
    c = result.claims
    c5 = c[(c["claim"] == "C5") & (c["study"] == "") & (c["dataset"] == "falling")]
    assert set(c5["verdict"]) == {"not run"}
    assert c5["reason"].str.contains("needs T = 10 and >= 3 temperatures").all()
    # the paper's own experiments that the store lacks, e.g. Figure 3's CIFAR-100 pair
    fig3 = c[(c["claim"] == "C7") & (c["dataset"] == "cifar100")]
    assert fig3[["verdict", "reason", "in_paper"]].values.tolist() == [
        ["not run", "not in the store", True]]
    assert list(c.columns) == COLUMNS
    assert set(c["claim"]) == {claim.id for claim in CLAIMS}


def test_verdicts_are_in_paper_comparison_md_and_printed(planted, capsys):
    root, _, result = planted
    page = open(f"{root}/analysis/paper_comparison.md").read()
    assert "## The paper's claims, judged by rules fixed before any run" in page
    assert "| C3* | falling resnet50/resnet18 alpha=0.8 | young | eod | {2, 6, 10} |" in page
    claims = pd.read_csv(f"{root}/analysis/paper_claims.csv")
    assert len(claims) == len(result.claims)
    analysis.print_tables(result)
    out = capsys.readouterr().out
    assert out.index("## Runs read") < out.index("## Beside the paper (paper_comparison.md)")
    assert "| C3* | rising resnet50/resnet18 alpha=0.8 | young | eod |" in out
    assert {t.name for t in result.report.tables} >= {"paper_claims", "paper_comparison"}


# -- the rules on their own (no Ray) ---------------------------------------------------------
def test_welch_and_spearman_report_scipys_numbers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 8), rng.normal(1, 2, 5)
    t = stats.ttest_ind(a, b, equal_var=False)
    assert welch(a, b) == (t.statistic, t.pvalue, "")
    x, y = np.repeat([1.0, 2.0, 3.0, 4.0], 3), rng.normal(0, 1, 12)
    r = stats.spearmanr(x, y)
    assert spearman(x, y) == (r.statistic, r.pvalue, "")


@pytest.mark.parametrize("a, b, reason", [
    ([1.0, 2.0], [1.0, 2.0, 3.0], "n < 3 on a side (2 vs 3)"),
    ([3.0, 3.0, 3.0], [3.0, 3.0, 3.0], "all values equal"),
    ([0.1 + 0.2] * 3, [0.3] * 3, "all values equal"),  # float noise, scipy: p = 0.034 style
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], "no spread within either side"),  # scipy: p = 0
])
def test_degenerate_welch_is_inconclusive_with_a_reason(a, b, reason):
    t, p, why = welch(np.array(a), np.array(b))
    assert np.isnan(t) and np.isnan(p) and why == reason


@pytest.mark.parametrize("t, y, reason", [
    ([1.0, 2.0], [0.5, 0.4], "n < 3 (2)"),
    ([4.0, 4.0, 4.0, 4.0], [1.0, 2.0, 3.0, 4.0], "constant input: one temperature"),
    ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], "constant input: all values equal"),
])
def test_degenerate_spearman_is_inconclusive_with_a_reason(t, y, reason):
    rho, p, why = spearman(np.array(t), np.array(y))
    assert np.isnan(rho) and np.isnan(p) and why == reason


def test_verdict_follows_the_papers_direction_at_005():
    assert verdict(-0.8, 0.01, -1) == ("reproduced", "")
    assert verdict(0.8, 0.01, -1) == ("contradicted", "")
    assert verdict(-0.8, 0.06, -1) == ("inconclusive", "p > 0.05")
    assert verdict(2.5, 0.05, +1) == ("reproduced", "")


def _frames(temps, n_sc, n_tc):
    """runs / significance frames of one pair (no fairness) with #SC, #TC per T."""
    exps = [Experiment("cifar100", "", "resnet56", "resnet20", t, 0.8, (f"ds{t:g}",),
                       ("nds",), ("teacher",)) for t in temps]
    runs = pd.DataFrame({"run_id": ["teacher", "nds"] + [f"ds{t:g}" for t in temps],
                         "test_accuracy": 0.7})
    sig = pd.DataFrame([{"dataset": "cifar100", "study": "", "teacher_arch": "resnet56",
                         "student_arch": "resnet20", "temperature": t, "alpha": 0.8,
                         "comparison": comp, "n_significant": n}
                        for t, sc, tc in zip(temps, n_sc, n_tc)
                        for comp, n in (("ds_vs_nds", sc), ("ds_vs_teacher", tc))])
    fair = pd.DataFrame(columns=["run_id", "attribute", "dpd", "eod"])
    return exps, runs, fair, sig


def test_c7_c8_one_value_per_temperature():
    temps = tuple(float(t) for t in range(2, 11))
    sc = [5, 7, 8, 9, 9, 10, 13, 18, 22]  # Table 1, CIFAR-100 ResNet-56/ResNet-20
    tc = [15, 12, 9, 8, 8, 6, 6, 9, 11]
    c = judge(*_frames(temps, sc, tc))
    c7 = c[(c["claim"] == "C7") & (c["dataset"] == "cifar100") & (c["study"] == "")].iloc[0]
    r = stats.spearmanr(temps, sc)
    assert (c7["statistic"], c7["pvalue"], c7["n"]) == (r.statistic, r.pvalue, 9)
    assert c7["verdict"] == "reproduced" and c7["in_paper"]
    c8 = c[(c["claim"] == "C8") & (c["dataset"] == "cifar100")].iloc[0]
    assert c8["statistic"] == stats.spearmanr(temps, tc).statistic
    # fairness claims do not apply to a pair without sensitive attributes
    assert not c[c["dataset"] == "cifar100"]["claim"].isin(["C2", "C3", "C6"]).any()


def test_c7_needs_three_temperatures():
    c = judge(*_frames((2.0, 4.0), [1, 2], [3, 1]))
    c7 = c[(c["claim"] == "C7") & (c["dataset"] == "cifar100")].iloc[0]
    assert c7["verdict"] == "not run" and "needs >= 3 temperatures in 2-10" in c7["reason"]
    c1 = c[(c["claim"] == "C1") & (c["dataset"] == "cifar100")].iloc[0]
    assert c1["verdict"] == "inconclusive" and c1["reason"] == "n < 3 on a side (2 vs 1)"
