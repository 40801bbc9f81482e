"""The analysis job end to end on stores written by the tests (local Ray, local and S3)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from scipy import stats

from kdray import analysis
from kdray.analysis.__main__ import main
from kdray.store import Store
from analysis_store import write_study

SIGNIFICANCE_COLUMNS = ["dataset", "teacher_arch", "student_arch", "temperature", "alpha",
                        "comparison", "n_classes", "n_seeds_ds", "n_seeds_ref", "n_significant",
                        "n_significant_bh", "ds_acc_mean", "ds_acc_std"]
CLASS_TEST_COLUMNS = ["dataset", "teacher_arch", "student_arch", "temperature", "alpha",
                      "comparison", "class", "statistic", "pvalue", "pvalue_bh",
                      "ds_norm_acc_mean", "ref_norm_acc_mean"]
FAIRNESS_COLUMNS = ["dataset", "role", "arch", "teacher_arch", "temperature", "alpha",
                    "attribute", "n_seeds", "acc_mean", "acc_std", "dpd_mean", "dpd_std",
                    "eod_mean", "eod_std", "dpd_ci95_halfwidth", "eod_ci95_halfwidth"]

PLANTED = [0.78] * 10
PLANTED[3] = 0.45  # DS at T=2 loses class 3


def _read_all(store: Store, run_ids):
    return {r: pq.read_table(io.BytesIO(store.read_bytes(store.run_path(r, "predictions.parquet"))))
            .to_pandas() for r in run_ids}


def _norm_acc(df: pd.DataFrame) -> np.ndarray:
    per_class = (df["label"] == df["pred"]).groupby(df["label"]).mean().sort_index().to_numpy()
    return per_class / (df["label"] == df["pred"]).mean()


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_local):
    """A classification study with a planted effect and a binary fairness study, analysed once."""
    root = str(tmp_path_factory.mktemp("study") / "store")
    made = write_study(root, ds_acc={2.0: PLANTED, 4.0: 0.78}, temperatures=(2.0, 4.0))
    rng = np.random.default_rng(7)
    attrs = {"young": rng.integers(0, 2, 600), "male": rng.integers(0, 2, 600)}
    fair = write_study(root, dataset="celeba-smiling", n_classes=2, per_class=300,
                       seeds=range(3), temperatures=(1.0, 5.0), attributes=attrs,
                       teacher_arch="resnet50", student_arch="resnet18")
    result = analysis.run(root, wandb_mode="disabled")
    return root, made, fair, attrs, result


def test_planted_effect_found_and_counts_equal_direct_scipy(study):
    root, made, _, _, result = study
    preds = _read_all(Store(root), made["teacher"] + made["nds"] + made["ds"])
    sig = pd.read_csv(f"{root}/analysis/significance.csv")
    for temp in (2.0, 4.0):
        ds_ids = [r for r in made["ds"] if f"-T{temp:g}-" in r]
        ds = np.stack([_norm_acc(preds[r]) for r in ds_ids])
        for comp, ref_ids in (("ds_vs_nds", made["nds"]), ("ds_vs_teacher", made["teacher"])):
            ref = np.stack([_norm_acc(preds[r]) for r in ref_ids])
            p = stats.ttest_ind(ds, ref, axis=0, equal_var=False).pvalue
            row = sig[(sig["dataset"] == "toy") & (sig["temperature"] == temp)
                      & (sig["comparison"] == comp)].iloc[0]
            assert row["n_significant"] == int((p <= 0.05).sum())
            assert row["n_significant_bh"] == int(
                (stats.false_discovery_control(p, method="bh") <= 0.05).sum())
            assert (row["n_classes"], row["n_seeds_ds"], row["n_seeds_ref"]) == (10, 5, 5)
    cls = result.class_tests
    hit = cls[(cls["dataset"] == "toy") & (cls["temperature"] == 2.0)
              & (cls["comparison"] == "ds_vs_nds") & (cls["class"] == 3)]
    assert hit["pvalue"].iloc[0] < 1e-4 and hit["pvalue_bh"].iloc[0] <= 0.05
    assert hit["ds_norm_acc_mean"].iloc[0] < hit["ref_norm_acc_mean"].iloc[0]


def test_output_files_have_the_design_columns(study):
    root, _, _, _, result = study
    assert list(pd.read_csv(f"{root}/analysis/significance.csv").columns) == \
        SIGNIFICANCE_COLUMNS + ["n_degenerate"]
    assert list(pq.read_table(f"{root}/analysis/class_tests.parquet").column_names) == \
        CLASS_TEST_COLUMNS
    assert list(pd.read_csv(f"{root}/analysis/fairness.csv").columns) == FAIRNESS_COLUMNS
    names = set(result.files)
    assert {"significance.csv", "class_tests.parquet", "fairness.csv", "tables.md"} <= names
    assert "disagreement/toy_resnet56_vs_resnet20_ds_T2_a0.8.csv" in names
    assert "disagreement/toy_resnet56_vs_resnet20_nds.csv" in names
    figs = {n for n in names if n.startswith("figures/")}
    assert "figures/toy_resnet56-resnet20_a0.8_significance.png" in figs
    assert "figures/toy_resnet56-resnet20_a0.8_class_accuracy.png" in figs
    assert "figures/celeba-smiling_resnet50-resnet18_a0.8_fairness_young.png" in figs
    assert "figures/toy_resnet56_vs_resnet20_nds_disagreement.png" in figs
    for f in figs:
        assert open(f"{root}/analysis/{f}", "rb").read(4) == b"\x89PNG"


def test_tables_md_is_laid_out_like_the_paper(study):
    root, _, _, _, result = study
    md = open(f"{root}/analysis/tables.md").read()
    assert md == result.tables_md
    assert "## toy: resnet56 / resnet20, alpha = 0.8" in md
    assert "| Model | Temp | Test Acc. (%) | #SC | #TC | #SC (BH) | #TC (BH) | seeds |" in md
    lines = md.splitlines()
    start = lines.index("## toy: resnet56 / resnet20, alpha = 0.8")
    body = [ln for ln in lines[start + 4:start + 8]]
    assert [ln.split(" | ")[0] for ln in body] == ["| Teacher", "| NDS", "| DS", "| DS"]
    sig = result.significance
    row = sig[(sig["dataset"] == "toy") & (sig["temperature"] == 2.0)]
    n_sc = int(row.loc[row["comparison"] == "ds_vs_nds", "n_significant"].iloc[0])
    assert body[2].split(" | ")[3] == str(n_sc)
    assert "EOD young (%)" in md and "DPD male (%)" in md
    assert "32 complete run(s) read" in md or "complete run(s) read" in md


def test_fairness_equals_fairlearn_per_run_mean(study):
    root, _, fair, attrs, result = study
    preds = _read_all(Store(root), fair["ds"])
    t5 = [r for r in fair["ds"] if "-T5-" in r]
    dpd = [demographic_parity_difference(preds[r]["label"], preds[r]["pred"],
                                         sensitive_features=attrs["young"]) for r in t5]
    eod = [equalized_odds_difference(preds[r]["label"], preds[r]["pred"],
                                     sensitive_features=attrs["young"]) for r in t5]
    f = pd.read_csv(f"{root}/analysis/fairness.csv")
    row = f[(f["role"] == "ds") & (f["temperature"] == 5.0) & (f["attribute"] == "young")].iloc[0]
    assert row["n_seeds"] == 3
    assert row["dpd_mean"] == pytest.approx(100 * np.mean(dpd))
    assert row["dpd_std"] == pytest.approx(100 * np.std(dpd, ddof=1))
    assert row["eod_mean"] == pytest.approx(100 * np.mean(eod))
    teacher = f[(f["role"] == "teacher") & (f["attribute"] == "male")].iloc[0]
    assert pd.isna(teacher["temperature"]) and pd.isna(teacher["teacher_arch"])
    assert set(f["dataset"]) == {"celeba-smiling"}  # the toy study has no attributes


def test_disagreement_csv_equals_hand_count(study):
    root, made, _, _, _ = study
    preds = _read_all(Store(root), made["teacher"] + made["ds"])
    ds_t4 = [r for r in made["ds"] if "-T4-" in r]
    expected = np.zeros((10, 10))
    for t, d in zip(made["teacher"], ds_t4):  # seed k with seed k
        tp, dp = preds[t]["pred"].to_numpy(), preds[d]["pred"].to_numpy()
        np.add.at(expected, (tp[tp != dp], dp[tp != dp]), 1)
    expected /= len(ds_t4)
    df = pd.read_csv(f"{root}/analysis/disagreement/toy_resnet56_vs_resnet20_ds_T4_a0.8.csv")
    assert list(df.columns) == ["teacher_pred", "student_pred", "mean_count", "n_seeds"]
    got = np.zeros((10, 10))
    got[df["teacher_pred"], df["student_pred"]] = df["mean_count"]
    np.testing.assert_allclose(got, expected)
    assert set(df["n_seeds"]) == {5}


def test_s3_store_read_and_written(s3_uri, ray_local):
    write_study(s3_uri, n_classes=4, per_class=20, seeds=range(2), temperatures=(3.0,))
    result = analysis.run(s3_uri, wandb_mode="disabled", figures=False)
    store = Store(s3_uri)
    assert store.exists(store.path("analysis", "significance.csv"))
    assert store.exists(store.path("analysis", "tables.md"))
    sig = pd.read_csv(io.BytesIO(store.read_bytes(store.path("analysis", "significance.csv"))))
    assert list(sig["n_seeds_ds"]) == [2, 2]
    assert "testing:testing" not in result.tables_md and "***@" in result.summary.store


def test_several_studies_of_one_dataset_are_never_mixed(tmp_path, ray_local):
    root = str(tmp_path / "store")
    write_study(root, n_classes=3, per_class=20, seeds=range(2), temperatures=(2.0,))
    write_study(root, n_classes=3, per_class=20, seeds=range(2), temperatures=(2.0,),
                roles=("teacher", "ds"), epochs=1)  # a smoke test beside the full run
    result = analysis.run(root, wandb_mode="disabled", figures=False)
    sig = pd.read_csv(f"{root}/analysis/significance.csv")
    assert "study" in sig.columns
    full = sig[sig["study"] == "epochs=100"]
    smoke = sig[sig["study"] == "epochs=1"]
    assert set(full["comparison"]) == {"ds_vs_nds", "ds_vs_teacher"}
    assert list(smoke["comparison"]) == ["ds_vs_teacher"]  # the smoke study has no NDS
    few = result.too_few_seeds
    assert few[["study", "comparison", "n_seeds_ref"]].values.tolist() == [
        ["epochs=1", "ds_vs_nds", 0]]
    assert "## toy [epochs=1]: resnet56 / resnet20, alpha = 0.8" in result.tables_md


def test_wandb_offline_logs_one_analysis_run(tmp_path, ray_local, monkeypatch):
    root = str(tmp_path / "store")
    write_study(root, n_classes=3, per_class=20, seeds=range(2), temperatures=(2.0,))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = analysis.run(root, wandb_mode="offline")
    assert result.wandb_run_id
    runs = list((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{result.wandb_run_id}"))
    assert len(runs) == 1
    assert list(runs[0].glob("files/media/images/figures/*.png"))
    assert list(runs[0].glob("files/media/table/significance*.table.json"))
    assert list(runs[0].glob("files/media/table/paper_claims*.table.json"))  # the verdicts


def test_cli_prints_tables(tmp_path, ray_local, capsys):
    root = str(tmp_path / "store")
    write_study(root, n_classes=3, per_class=20, seeds=range(2), temperatures=(2.0,))
    out = str(tmp_path / "elsewhere")
    assert main(["--store", root, "--out", out, "--wandb-mode", "disabled", "--no-figures",
                 "--normalisation", "difference", "--level", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert "## toy: resnet56 / resnet20, alpha = 0.8" in printed
    assert "β^c - β^M" in printed and "p <= 0.01" in printed
    assert open(f"{out}/tables.md").read() in printed


def test_cli_missing_store_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdray.analysis", "--store", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"analysis: error: store: '{tmp_path / 'nope'}' does not exist (or is not a folder); "
        "expected a store written by a sweep, with runs/"]
    assert "Traceback" not in proc.stderr


def test_no_effect_gives_about_level_share_of_false_positives(tmp_path, ray_local):
    root = str(tmp_path / "store")
    k = 400
    acc = np.random.default_rng(11).uniform(0.6, 0.9, k)  # class difficulty shared by all
    write_study(root, n_classes=k, per_class=50, seeds=range(5), temperatures=(4.0,),
                teacher_acc=acc, nds_acc=acc, ds_acc=acc, noise=0.05, seed=3)
    result = analysis.run(root, wandb_mode="disabled", figures=False)
    row = result.significance.set_index("comparison").loc["ds_vs_nds"]
    assert row["n_classes"] == k
    assert 0.02 * k <= row["n_significant"] <= 0.09 * k  # expected 0.05 * 400 = 20
    assert row["n_significant_bh"] <= 3


def test_pairs_with_their_own_recipes_are_one_study_unless_an_arch_has_two():
    import pandas as pd

    from kdray.analysis.groups import label_studies

    sgd, adamw, short = '{"lr":0.1}', '{"lr":0.0005}', '{"lr":0.1,"epochs":1}'
    runs = pd.DataFrame({"dataset": ["imagenet"] * 4, "arch": ["resnet50", "resnet18", "vit_base", "tiny_vit"],
                         "study_key": [sgd, sgd, adamw, adamw]})
    assert label_studies(runs).tolist() == ["", "", "", ""]
    runs.loc[4] = ["imagenet", "resnet18", short]  # the same arch in a second study
    labels = label_studies(runs)
    assert labels[1] != labels[4] and all(labels)
