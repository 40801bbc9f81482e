"""The matched control (docs/claims.md, C9): the NDS at the step a DS gives its CE term, from
its spec and the study's plan through the analysis to the claim that compares the DS with it."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from kdray import RunSpec, analysis
from kdray.analysis.claim_tables import INDISTINGUISHABLE
from kdray.sweep.cli import Script
from kdray.sweep.grid import Experiment, expand
from kdray.sweep.plan import stage_of
from analysis_store import write_fairness_study

ROOT = Path(__file__).resolve().parents[1]
NDS = RunSpec(dataset="trifeature-shape", role="nds", arch="lenet5", seed=3)
DS = RunSpec(dataset="trifeature-shape", role="ds", arch="lenet5", teacher_arch="resnet20",
             temperature=10, alpha=0.8, seed=3)


# -- the spec ------------------------------------------------------------------------------
def test_a_control_is_the_nds_at_the_step_a_ds_gives_its_ce_term():
    c = DS.control_spec()
    assert c == NDS.control_spec(0.8)
    assert (c.role, c.arch, c.seed, c.alpha, c.teacher_arch, c.temperature) == (
        "control", "lenet5", 3, 0.8, None, None)
    assert c.lr == pytest.approx(NDS.lr * 0.2) and c.lr == 0.02  # rounded: run.json reads 0.02
    assert c.weight_decay == pytest.approx(NDS.weight_decay / 0.2)
    assert (c.epochs, c.batch_size, c.lr_milestones, c.data) == (
        NDS.epochs, NDS.batch_size, NDS.lr_milestones, NDS.data)
    assert c.run_id.startswith("trifeature-shape-lenet5-control-a0.8-s3-")
    assert c.run_id != NDS.run_id and c.run_id != NDS.control_spec(0.5).run_id
    assert RunSpec.from_dict(c.to_dict()) == c  # the derived step is the spec's, not re-derived
    # set on its own, a control takes the recipe's step, derived
    assert RunSpec(dataset="trifeature-shape", role="control", arch="lenet5", seed=3,
                   alpha=0.8) == c


def test_a_control_needs_no_teacher_and_trains_in_stage_1():
    from kdray.trial.steps import check_teacher

    c = NDS.control_spec(0.8)
    assert check_teacher(c, store=None) is None and stage_of(c) == 1
    with pytest.raises(ValueError, match="^temperature: 10.0 is set on a 'control' spec"):
        c.replace(temperature=10.0)
    with pytest.raises(ValueError, match="^alpha: a 'control' spec needs alpha"):
        c.replace(alpha=None)


@pytest.mark.parametrize("make", [
    lambda: NDS.control_spec(1.0), lambda: DS.replace(alpha=1.0).control_spec(),
    lambda: RunSpec(dataset="trifeature-shape", role="control", arch="lenet5", alpha=1),
    lambda: Experiment("e", ("trifeature-shape",), (("resnet20", "lenet5"),), (10.0,),
                       alphas=(0.8, 1.0), controls=True)])
def test_a_control_at_alpha_1_is_refused_naming_the_value(make):
    with pytest.raises(ValueError, match=r"alpha: 1(\.0)? is not < 1 for a 'control' spec"):
        make()


# -- the plan ------------------------------------------------------------------------------
def _trifeature() -> list[Experiment]:
    return runpy.run_path(str(ROOT / "sweeps" / "trifeature_paper.py"))["EXPERIMENTS"]


def test_the_trifeature_study_trains_five_controls_in_stage_1():
    shape = [e.replace(datasets=("trifeature-shape",)) for e in _trifeature()]
    plan = expand(shape)
    assert plan.counts() == "65 runs (5 teachers, 5 NDS, 5 controls, 50 DS)"
    assert sorted(c.seed for c in plan.controls) == [0, 1, 2, 3, 4]
    assert {c.alpha for c in plan.controls} == {0.8} and set(plan.controls) <= set(plan.stage1)
    assert [c.run_id for c in plan.controls] == [d.control_spec().run_id for d in plan.ds
                                                 if d.temperature == 1.0]


def _script() -> Script:
    return Script("sweeps/trifeature_paper.py", _trifeature(),
                  default_datasets=("trifeature-shape",))


def test_the_dry_run_lists_the_controls_and_the_flag_turns_them_off(tmp_path, capsys):
    args = ["--dry-run", "--store", str(tmp_path / "store"), "--plan",
            str(tmp_path / "plan.json"), "--wandb-mode", "disabled"]
    assert _script().main(args) == 0
    assert "plan: 65 runs (5 teachers, 5 NDS, 5 controls, 50 DS)" in capsys.readouterr().out
    assert _script().main(args + ["--no-controls"]) == 0
    assert "plan: 60 runs (5 teachers, 5 NDS, 0 controls, 50 DS)" in capsys.readouterr().out
    assert _script().main(args + ["--alphas", "1"]) == 2
    assert "alpha: 1.0 is not < 1 for a 'control' spec" in capsys.readouterr().err


# -- the analysis and C9 -----------------------------------------------------------------------
HIGH_T = (8.0, 9.0, 10.0)
CONTROL = [0.20, 0.22, 0.18, 0.21, 0.19]
STORES = {
    # the DS at high T is its control give or take a point either way: indistinguishable (on
    # the paper's dataset and pair, so that paper_comparison.md shows the Control row beside
    # the paper's NDS)
    ("trifeature-shape", "resnet20", "lenet5"): {
        "teacher": 0.04, "nds": 0.30, "control": CONTROL,
        **{t: [0.21, 0.21, 0.20, 0.19, 0.19] for t in HIGH_T}},
    # the DS far fairer (and so more accurate) than its control in every seed
    ("fairer", "resnet50", "resnet18"): {
        "teacher": 0.04, "nds": 0.30, "control": CONTROL,
        **{t: [0.04, 0.05, 0.03, 0.06, 0.05] for t in HIGH_T}},
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, ray_local):
    root = str(tmp_path_factory.mktemp("controls") / "store")
    for (dataset, teacher, student), gap in STORES.items():
        write_fairness_study(root, dataset, gap, seeds=range(5), per_cell=100,
                             teacher_arch=teacher, student_arch=student)
    return root, analysis.run(root, wandb_mode="disabled", figures=False)


def _c9(result, dataset: str):
    c = result.claims
    return c[(c["claim"] == "C9") & (c["dataset"] == dataset)].set_index("metric")


def test_the_control_has_its_row_beside_the_nds(planted):
    root, result = planted
    tables = open(f"{root}/analysis/tables.md").read()
    section = tables.split("## fairer: resnet50 / resnet18, alpha = 0.8")[1]
    assert section.index("| NDS ") < section.index("| Control ") < section.index("| DS ")
    fairness = tables.split("Fairness of fairer resnet50 / resnet18, alpha = 0.8")[1]
    assert fairness.index("| NDS ") < fairness.index("| Control ") < fairness.index("| DS ")
    assert "| Control | – | 82.50 ± 0.56 | 20.00 ± 1.58 | 5.00 ± 0.50 |" in fairness
    page = open(f"{root}/analysis/paper_comparison.md").read()
    block = page.split("### trifeature-shape: resnet20 / lenet5")[1]
    assert block.index("| NDS ") < block.index("| Control | – | 0.8 |") < block.index("| DS ")
    assert result.runs["study"].eq("").all()  # the control's derived step is its NDS's study
    assert "Runs that no experiment uses" not in tables


def test_a_ds_equal_to_its_control_is_indistinguishable_in_plain_words(planted):
    root, result = planted
    rows = _c9(result, "trifeature-shape")
    assert sorted(rows.index) == ["dpd", "eod", "test_accuracy"]
    assert set(rows["verdict"]) == {"inconclusive"} and not rows["in_paper"].any()
    assert rows.loc["eod", "effect"] == pytest.approx(0.0, abs=1e-9) and (rows["n"] == 5).all()
    assert rows.loc["eod", "pvalue"] == pytest.approx(1.0) and rows["pvalue_holm"].notna().all()
    page = open(f"{root}/analysis/paper_comparison.md").read()
    assert "### The DS beside its matched control (C9)" in page
    assert (f"- trifeature-shape resnet20/lenet5 alpha=0.8, eod (young): {INDISTINGUISHABLE}"
            in page)
    assert "fairer resnet50/resnet18 alpha=0.8, eod (young): " + INDISTINGUISHABLE not in page


def test_a_ds_fairer_and_more_accurate_than_its_control_reproduces(planted):
    root, result = planted
    rows = _c9(result, "fairer")
    assert rows["verdict"].to_dict() == {"test_accuracy": "reproduced", "eod": "reproduced",
                                         "dpd": "reproduced"}
    assert rows.loc["eod", "effect"] == pytest.approx(-15.4, abs=0.2)
    assert rows.loc["test_accuracy", "effect"] > 0 and (rows["family"] == "kdray").all()
    page = open(f"{root}/analysis/paper_comparison.md").read()
    assert "| C9* | fairer resnet50/resnet18 alpha=0.8 | young | eod | 8-10 |" in page
