"""paper_comparison.md / .csv on a store shaped like sweeps/quick.py's: the cells both have,
side by side, the rest `not run`; the study's recipe beside kdray's numbers; the paper's
values in the fairness figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdray import analysis
from kdray.analysis.model import LineFigure
from kdray.analysis.paper_comparison import recipe_differences
from kdray.analysis.tables import pm
from analysis_store import write_study

# sweeps/quick.py's recipe and data (3 seeds here, 5 there)
QUICK = dict(epochs=5, optimizer="adamw", lr=1e-3, lr_milestones=[4], batch_size=16,
             augmentation="none",
             data={"image_size": 16, "per_combination": 5, "test_per_combination": 1,
                   "data_seed": 0})


@pytest.fixture(scope="module")
def quick(tmp_path_factory, ray_local):
    root = str(tmp_path_factory.mktemp("quick") / "store")
    rng = np.random.default_rng(3)
    attrs = {"color": rng.integers(0, 10, 1000), "texture": rng.integers(0, 10, 1000)}
    made = write_study(root, dataset="trifeature-shape", teacher_arch="resnet20",
                       student_arch="lenet5", temperatures=(1.0, 2.0, 4.0), seeds=range(3),
                       teacher_acc=0.99, nds_acc=0.95, ds_acc=0.96, attributes=attrs, **QUICK)
    result = analysis.run(root, wandb_mode="disabled")
    return root, made, result


def test_compared_cells_are_the_ones_both_have(quick):
    root, made, result = quick
    csv = pd.read_csv(f"{root}/analysis/paper_comparison.csv")
    csv["attribute"] = csv["attribute"].fillna("")
    done = csv[csv["status"] == "compared"]
    assert sorted(set(zip(done["role"], done["temperature"].fillna(0)))) == [
        ("ds", 1.0), ("ds", 2.0), ("ds", 4.0), ("nds", 0.0), ("teacher", 0.0)]
    assert set(zip(done["metric"], done["attribute"])) == {
        ("test_accuracy", ""), ("eod", "color"), ("dpd", "color")}  # the paper has no texture
    assert len(done) == 15 and set(done["tables"]) == {"2, 9"}
    # every other cell of the paper is listed, not run (once: this store has one study)
    assert len(csv) == 506 and set(csv.loc[csv["status"] != "compared", "status"]) == {
        "not run"}
    ds1 = done[(done["temperature"] == 1.0) & (done["metric"] == "test_accuracy")].iloc[0]
    acc = 100 * result.runs.set_index("run_id").loc[
        [r for r in made["ds"] if "-T1-" in r], "test_accuracy"]
    assert ds1["kdray_mean"] == pytest.approx(acc.mean())
    assert ds1["kdray_std"] == pytest.approx(acc.std(ddof=1))
    assert (ds1["kdray_n"], ds1["paper_mean"], ds1["paper_std"]) == (3, 92.70, 0.15)
    assert ds1["difference"] == pytest.approx(acc.mean() - 92.70)
    eod = done[(done["role"] == "nds") & (done["metric"] == "eod")].iloc[0]
    fair = result.fairness
    want = fair[(fair["role"] == "nds") & (fair["attribute"] == "color")].iloc[0]
    assert (eod["kdray_mean"], eod["kdray_ci95_halfwidth"]) == pytest.approx(
        (want["eod_mean"], want["eod_ci95_halfwidth"]))


def test_page_shows_both_side_by_side_under_the_recipe(quick):
    root, made, result = quick
    page = open(f"{root}/analysis/paper_comparison.md").read()
    assert "| Table 1 | 116 | 0 | 116 |" in page
    assert "| Table 2 | 72 | 15 | 57 |" in page and "| Table 9 | 90 | 15 | 75 |" in page
    assert "### trifeature-shape: resnet20 / lenet5 (paper Table(s) 2, 9)" in page
    recipe = next(line for line in page.splitlines() if line.startswith("kdray recipe:"))
    for part in ("epochs=5 (paper 100)", "optimizer=adamw (paper sgd)",
                 "batch_size=16 (paper 64)", "augmentation=none (paper crop_flip)",
                 "data.image_size=16 (paper 224)", "data.per_combination=5 (paper 10)"):
        assert part in recipe
    acc = 100 * result.runs.set_index("run_id").loc[
        [r for r in made["ds"] if "-T1-" in r], "test_accuracy"]
    assert f"| DS | 1 | 0.8 | {pm(acc.mean(), acc.std(ddof=1))} | 92.70 ± 0.15 |" in page
    assert "| DS | 3 |" not in page  # the paper's T = 3: not run, not shown
    assert "- C5 (the fairness trend reverses at T = 20-40): trifeature-texture " in page


def test_printed_after_the_usual_tables(quick, capsys):
    _, _, result = quick
    analysis.print_tables(result)
    out = capsys.readouterr().out
    summary = out[out.index("## Beside the paper (paper_comparison.md)"):]
    assert "- trifeature-shape: kdray recipe " in summary and "epochs=5 (paper 100)" in summary
    assert "Table 2: 15 of 72, Table 3: 0 of 60" in summary
    assert "| C3 | trifeature-shape resnet20/lenet5 alpha=0.8 | color | eod | {1, 2, 4} |" in \
        summary
    assert summary.count("\n") < 40  # a summary, not the page


def test_fairness_figure_draws_the_papers_values(quick):
    _, _, result = quick
    fig = next(f for f in result.report.figures if isinstance(f, LineFigure)
               and f.name.endswith("_fairness_color.png"))
    eod = fig.panels[0]
    paper = next(s for s in eod.series if s.label == "paper DS")
    assert paper.y.tolist() == [1.67, 1.60, 1.32]  # Table 2's EOD at T = 1, 2, 4
    assert paper.err.tolist() == [0.04, 0.06, 0.05]
    refs = {r.label: r.y for r in eod.references}
    assert refs["paper teacher"] == 0.0 and refs["paper NDS"] == 2.81
    texture = next(f for f in result.report.figures if f.name.endswith("_fairness_texture.png"))
    assert [s.label for s in texture.panels[0].series] == ["DS"]  # the paper has no texture


def test_recipe_of_a_study_on_the_papers_recipe_and_of_an_unknown_dataset():
    from kdray.spec import RunSpec

    from kdray.analysis.groups import study_key

    paper = RunSpec(dataset="cifar10", role="nds", arch="resnet20").to_dict()
    assert recipe_differences(study_key(paper), "cifar10", "resnet20") == "kdray's paper recipe"
    assert recipe_differences(study_key({**paper, "epochs": 7}), "cifar10", "resnet20") == \
        "epochs=7 (paper 100)"
    unknown = recipe_differences(study_key({"dataset": "toy", "epochs": 3}), "toy", "resnet20")
    assert unknown == "dataset=toy, epochs=3"


def test_two_recipes_under_one_study_label_give_each_cell_once():
    """On ImageNet the full paper's ResNet-50 -> ResNet-18 and ViT-B -> TinyViT pairs train
    with different recipes, so the store has two study keys that the analysis labels alike
    (no arch has two); each paper cell is compared once, with its own arch's recipe."""
    from kdray.spec import RunSpec

    from kdray.analysis.groups import study_key
    from kdray.analysis.paper_comparison import compare

    def runs_of(arch, role, epochs):
        key = study_key({**RunSpec(dataset="imagenet", role="nds", arch=arch).to_dict(),
                         "epochs": epochs})
        return [{"dataset": "imagenet", "study": "", "study_key": key, "role": role,
                 "arch": arch, "teacher_arch": None, "temperature": None, "alpha": None,
                 "test_accuracy": acc} for acc in (0.7, 0.72)]

    runs = pd.DataFrame(runs_of("resnet50", "teacher", 3) + runs_of("resnet18", "nds", 3)
                        + runs_of("vit_base", "teacher", 5))
    out = compare(runs, pd.DataFrame(columns=["dataset", "study", "role", "arch", "teacher_arch",
                                              "temperature", "alpha", "attribute"]),
                  pd.DataFrame(columns=["dataset", "study", "student_arch", "teacher_arch",
                                        "temperature", "alpha", "comparison"]))
    cell = out[(out.dataset == "imagenet") & (out.role == "teacher")
               & (out.teacher_arch == "resnet50")
               & (out.student_arch == "resnet18") & (out.metric == "test_accuracy")]
    assert len(cell) == 1 and cell.iloc[0]["status"] == "compared"
    assert cell.iloc[0]["kdray_mean"] == pytest.approx(71.0)
    assert "epochs=3" in cell.iloc[0]["recipe"]
