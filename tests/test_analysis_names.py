"""Class names and attribute value names from run.json reach tables.md, the CSV/Parquet files,
the figures and their titles fit; runs without names keep the old labels."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kdray import analysis
from kdray.analysis.figures import draw
from kdray.analysis.model import Heatmap, LineFigure
from analysis_store import write_study
from kdray.store import Store

NAMES = ["circle", "square", "triangle", "star"]
LOST = [0.8, 0.8, 0.3, 0.8]  # DS at T=2 loses the triangles
COLORS = ["red", "green"]


@pytest.fixture(scope="module")
def named(tmp_path_factory, ray_local):
    root = str(tmp_path_factory.mktemp("named") / "store")
    write_study(root, n_classes=4, per_class=50, seeds=range(3), temperatures=(2.0, 4.0),
                ds_acc={2.0: LOST, 4.0: 0.8}, teacher_acc=0.8, nds_acc=0.8, noise=0.01,
                teacher_arch="a_teacher_with_a_rather_long_architecture_name",
                attributes={"color": np.tile([0, 1], 100)},
                record={"class_names": NAMES, "attribute_values": {"color": COLORS}})
    # an older study beside it: no names in its run.json
    write_study(root, dataset="old", n_classes=3, per_class=20, seeds=range(2),
                temperatures=(2.0,))
    return root, analysis.run(root, wandb_mode="disabled")


def test_names_reach_tables_md(named):
    root, result = named
    md = open(f"{root}/analysis/tables.md").read()
    lines = md.splitlines()
    toy = lines.index("## toy: a_teacher_with_a_rather_long_architecture_name / resnet20, "
                      "alpha = 0.8")
    t2 = next(ln for ln in lines[toy:] if ln.startswith("- T=2: #SC: "))
    assert t2.startswith("- T=2: #SC: triangle")
    assert "- color: 0 = red, 1 = green" in lines[toy:]
    old = lines.index("## old: resnet56 / resnet20, alpha = 0.8")
    assert not any(name in ln for ln in lines[old:toy] for name in NAMES)


def test_names_reach_the_class_tests_and_disagreement_files(named):
    root, result = named
    cls = pq.read_table(f"{root}/analysis/class_tests.parquet").to_pandas()
    cols = list(cls.columns)
    assert cols[cols.index("class") + 1] == "class_name"
    toy = cls[cls["dataset"] == "toy"]
    assert (toy["class_name"] == [NAMES[c] for c in toy["class"]]).all()
    old = cls[cls["dataset"] == "old"]
    assert (old["class_name"] == [f"class {c}" for c in old["class"]]).all()

    name = "toy_a_teacher_with_a_rather_long_architecture_name_vs_resnet20_ds_T2_a0.8"
    dis = pd.read_csv(f"{root}/analysis/disagreement/{name}.csv")
    assert list(dis.columns) == ["teacher_pred", "teacher_pred_name", "student_pred",
                                 "student_pred_name", "mean_count", "n_seeds"]
    assert len(dis) and (dis["teacher_pred_name"] == [NAMES[c] for c in dis["teacher_pred"]]).all()
    assert (dis["student_pred_name"] == [NAMES[c] for c in dis["student_pred"]]).all()


def test_class_accuracy_csv_names_every_class_and_equals_a_direct_count(named):
    root, result = named
    acc = pd.read_csv(f"{root}/analysis/class_accuracy.csv")
    assert list(acc.columns) == ["dataset", "role", "arch", "teacher_arch", "temperature",
                                 "alpha", "class", "class_name", "n_seeds", "acc_mean",
                                 "acc_std"]
    toy = acc[acc["dataset"] == "toy"]
    assert (toy["class_name"] == [NAMES[c] for c in toy["class"]]).all()
    store = Store(root)
    ds2 = [r for r in store.list_run_ids() if r.startswith("toy-resnet20-ds-T2-")]
    per_run = []
    for rid in ds2:
        df = store.read_predictions(rid).to_pandas()
        per_run.append(100 * (df["label"] == df["pred"]).groupby(df["label"]).mean())
    expected = pd.concat(per_run, axis=1)
    row = toy[(toy["role"] == "ds") & (toy["temperature"] == 2.0)].set_index("class")
    np.testing.assert_allclose(row["acc_mean"], expected.mean(axis=1))
    np.testing.assert_allclose(row["acc_std"], expected.std(axis=1, ddof=1))
    assert set(row["n_seeds"]) == {3}


def _figure(result, suffix: str):
    return next(f for f in result.report.figures if f.name.endswith(suffix))


def test_names_reach_the_figures(named):
    root, result = named
    spec = _figure(result, "toy_a_teacher_with_a_rather_long_architecture_name-resnet20_a0.8_"
                           "class_accuracy.png")
    assert isinstance(spec, LineFigure)
    fig = draw(spec)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == NAMES
    spec = _figure(result, "toy_a_teacher_with_a_rather_long_architecture_name_vs_resnet20_"
                           "ds_T2_a0.8_disagreement.png")
    assert isinstance(spec, Heatmap)
    fig = draw(spec)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    old = draw(_figure(result, "old_resnet56-resnet20_a0.8_class_accuracy.png"))
    assert [t.get_text() for t in old.legends[0].get_texts()] == ["class 0", "class 1", "class 2"]


def test_every_figure_title_fits_inside_its_figure(named):
    root, result = named
    assert len(result.report.figures) >= 8
    for spec in result.report.figures:
        fig = draw(spec)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box, title = fig.bbox, fig.get_suptitle()
        assert title == spec.title
        t = fig._suptitle.get_window_extent(renderer)
        assert box.x0 <= t.x0 and t.x1 <= box.x1 and box.y0 <= t.y0 and t.y1 <= box.y1, spec.name
        for ax in fig.axes:  # clear of every axes (the colorbar's too)
            assert not t.overlaps(ax.get_window_extent(renderer)), spec.name
        for legend in fig.legends:
            lb = legend.get_window_extent(renderer)
            assert box.x0 <= lb.x0 and lb.x1 <= box.x1, spec.name
            assert not t.overlaps(lb), spec.name

    long = _figure(result, "toy_a_teacher_with_a_rather_long_architecture_name_vs_resnet20_"
                           "ds_T2_a0.8_disagreement.png")
    assert len(long.title) > 60  # wrapped, not cut off at the figure's edge
    png = open(f"{root}/analysis/figures/{long.name}", "rb").read()
    assert Image.open(io.BytesIO(png)).text["Title"] == long.title
