"""Every rerun leaves exactly its own outputs, a crash mid-way leaves the previous analysis (local
and S3), and the W&B run holds every table and figure (read back from the offline run's records)."""

from __future__ import annotations

import glob
import json
import os

import pyarrow.fs as pafs
import pytest

from kdray import analysis
from kdray.analysis.outputs import Staging
from analysis_store import write_study
from kdray.store import Store
from wandb_records import records


def _outputs(uri: str) -> dict[str, bytes]:
    """Every file under {store}/analysis, by name relative to it."""
    store = Store(uri)
    base = store.path("analysis")
    sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    return {i.path[len(base) + 1:]: store.read_bytes(i.path) for i in store.fs.get_file_info(sel)
            if i.type == pafs.FileType.File}


def _store_root(uri: str) -> set[str]:
    store = Store(uri)
    sel = pafs.FileSelector(store.root, recursive=False)
    return {i.base_name for i in store.fs.get_file_info(sel)}


def test_rerun_leaves_exactly_its_own_outputs(store_uri, ray_local):
    write_study(store_uri, n_classes=3, per_class=20, seeds=range(2), temperatures=(2.0, 4.0))
    first = analysis.run(store_uri, wandb_mode="disabled")
    assert set(_outputs(store_uri)) == set(first.files)
    assert any(f.startswith("figures/") for f in first.files)

    second = analysis.run(store_uri, wandb_mode="disabled", figures=False)
    files = _outputs(store_uri)
    assert set(files) == set(second.files)
    assert not any(f.startswith("figures/") for f in files)  # the first run's figures are gone
    assert files["tables.md"].decode() == second.tables_md
    assert _store_root(store_uri) == {"runs", "analysis"}  # no staging or old folder left


def test_crash_mid_way_leaves_the_previous_analysis(store_uri, ray_local, monkeypatch):
    write_study(store_uri, n_classes=3, per_class=20, seeds=range(2), temperatures=(2.0,))
    analysis.run(store_uri, wandb_mode="disabled", figures=False)
    before = _outputs(store_uri)
    write_study(store_uri, n_classes=3, per_class=20, seeds=range(2), temperatures=(8.0,),
                roles=("ds",), seed=5)  # new runs: the next analysis has more to say

    staged, write = [], Staging.write

    def crash(self, name, data):
        if name == "tables.md":
            raise RuntimeError("killed while writing the outputs")
        write(self, name, data)
        staged.append(name)

    monkeypatch.setattr(Staging, "write", crash)
    with pytest.raises(RuntimeError, match="killed while writing"):
        analysis.run(store_uri, wandb_mode="disabled")
    assert "significance.csv" in staged and any(f.startswith("figures/") for f in staged)
    assert _outputs(store_uri) == before  # byte for byte, no new file
    assert _store_root(store_uri) == {"runs", "analysis"}

    monkeypatch.undo()
    after = analysis.run(store_uri, wandb_mode="disabled", figures=False)
    assert "disagreement/toy_resnet56_vs_resnet20_ds_T8_a0.8.csv" in _outputs(store_uri)
    assert analysis.unchanged_tables(store_uri) == after.tables_md


def _logged(wandb_dir: str, run_id: str) -> tuple[dict[str, str], list]:
    """``{history key: W&B type}`` and the artifact records of one offline run."""
    (path,) = glob.glob(os.path.join(wandb_dir, "wandb", f"offline-run-*-{run_id}", "run-*.wandb"))
    types, artifacts = {}, []
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                if key.endswith("/_type"):
                    types[key.removesuffix("/_type")] = json.loads(item.value_json)
        elif kind == "artifact":
            artifacts.append(r.artifact)
    return types, artifacts


def test_wandb_run_has_every_table_and_figure(tmp_path, ray_local, monkeypatch):
    import numpy as np
    import wandb

    root = str(tmp_path / "store")
    names = ["circle", "square", "triangle", "star"]
    write_study(root, n_classes=4, per_class=20, seeds=range(2), temperatures=(2.0, 4.0),
                attributes={"color": np.tile([0, 1], 40)}, record={"class_names": names})
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 12)  # bigger tables go to the artifact
    wandb.teardown()  # W&B reads WANDB_DIR once per process: forget an earlier test's
    result = analysis.run(root, wandb_mode="offline")
    wandb.teardown()  # the offline writer has flushed every record once W&B is torn down

    types, artifacts = _logged(str(tmp_path / "wb"), result.wandb_run_id)
    report = result.report
    small = {t.name for t in report.tables if len(t.frame) <= 12}
    large = {t.name for t in report.tables if len(t.frame) > 12}
    assert {"class_tests", "tables/toy_resnet56-resnet20_a0.8_fairness"} <= small | large
    assert "class_tests" in large and "significance" in small
    assert {k for k, v in types.items() if v == "table-file"} == small
    (art,) = [a for a in artifacts if a.type == "analysis-tables"]
    assert {c.path for c in art.manifest.contents} == {f"{n}.table.json" for n in large}
    figures = {f"figures/{f.removeprefix('figures/').removesuffix('.png')}"
               for f in result.files if f.startswith("figures/")}
    assert len(figures) == len(report.figures) >= 4
    assert {k for k, v in types.items() if v == "image-file"} == figures

    (table,) = glob.glob(str(tmp_path / "wb" / "wandb" / f"offline-run-*-{result.wandb_run_id}"
                             / "files" / "media" / "table" / "tables" / "*_fairness_*.table.json"))
    logged = json.load(open(table))
    fair = next(t for t in report.tables if t.name.endswith("_fairness"))
    assert logged["columns"] == list(fair.frame.columns)
    assert logged["data"] == fair.frame.astype(str).values.tolist()

    (table,) = glob.glob(str(tmp_path / "wb" / "wandb" / f"offline-run-*-{result.wandb_run_id}"
                             / "files" / "media" / "table" / "disagreement" / "*_nds_*.table.json"))
    logged = json.load(open(table))
    assert logged["columns"][:2] == ["teacher_pred", "teacher_pred_name"]
    assert logged["data"] and all(row[1] == names[row[0]] for row in logged["data"])
