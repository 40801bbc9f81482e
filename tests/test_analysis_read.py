"""Bad input: missing/empty stores, incomplete and corrupt runs, different test samples,
too few seeds. Nothing is dropped silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdray import analysis
from kdray.analysis.read import open_store, summarise_predictions
from analysis_store import make_spec, write_run, write_study
from kdray.store import Store


def test_missing_store_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"store: '{tmp_path}/nope' does not exist"):
        analysis.run(str(tmp_path / "nope"), wandb_mode="disabled")


def test_empty_store_says_no_complete_runs(tmp_path):
    (tmp_path / "store").mkdir()
    with pytest.raises(ValueError, match=r"no complete runs in .*store: 0 run folder\(s\)"):
        analysis.run(str(tmp_path / "store"), wandb_mode="disabled")


def test_store_of_unfinished_runs_lists_why(tmp_path):
    root = tmp_path / "store"
    (root / "runs" / "a-run").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no complete runs in .*: 1 run folder.*no run.json "
                                         r"\(run not finished\): 1 run\(s\): a-run"):
        analysis.run(str(root), wandb_mode="disabled")


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="normalisation: 'log' is not one of"):
        analysis.run(str(tmp_path), normalisation="log")
    with pytest.raises(ValueError, match=r"level: 1.5 is not in \(0, 1\)"):
        analysis.run(str(tmp_path), level=1.5)
    with pytest.raises(ValueError, match="wandb-mode: 'loud' is not one of"):
        analysis.run(str(tmp_path), wandb_mode="loud")


def test_incomplete_and_corrupt_runs_are_skipped_named_and_counted(tmp_path, ray_local):
    root = str(tmp_path / "store")
    made = write_study(root, n_classes=3, per_class=20, seeds=range(3), temperatures=(2.0,))
    store = Store(root)
    bad_sha, garbage, no_json, no_preds, bad_spec = (made["ds"][0], made["ds"][1],
                                                     made["nds"][0], made["teacher"][0],
                                                     made["teacher"][1])
    # checksum mismatch: predictions rewritten after run.json
    store.write_bytes(store.run_path(bad_sha, "predictions.parquet"),
                      store.read_bytes(store.run_path(made["ds"][2], "predictions.parquet")))
    # unreadable: not Parquet, but run.json's checksum matches the garbage
    rec = store.read_run_json(garbage)
    store.write_bytes(store.run_path(garbage, "predictions.parquet"), b"not parquet at all")
    import hashlib
    rec["predictions_sha256"] = hashlib.sha256(b"not parquet at all").hexdigest()
    store.write_run_json(garbage, rec)
    store.fs.delete_file(store.run_path(no_json, "run.json"))
    store.fs.delete_file(store.run_path(no_preds, "predictions.parquet"))
    rec = store.read_run_json(bad_spec)
    rec["spec"]["role"] = "student"
    store.write_run_json(bad_spec, rec)

    result = analysis.run(root, wandb_mode="disabled", figures=False)
    s = result.summary
    assert (s.n_found, s.n_read, len(s.skipped)) == (9, 4, 5)
    assert s.n_rows == 4 * 60
    assert s.skipped[bad_sha].startswith("checksum mismatch")
    assert s.skipped[garbage].startswith("unreadable predictions.parquet")
    assert s.skipped[no_json] == "no run.json (run not finished)"
    assert s.skipped[no_preds] == "no predictions.parquet"
    assert s.skipped[bad_spec] == "invalid spec in run.json"
    assert "spec role 'student' is not one of" in s.details[bad_spec]
    assert s.details[garbage].startswith("ArrowInvalid")
    assert set(result.runs["run_id"]) == {made["ds"][2], made["nds"][1], made["nds"][2],
                                          made["teacher"][2]}
    md = result.tables_md
    assert "9 run folder(s), 4 complete run(s) read (240 prediction rows), 5 skipped" in md
    for rid in (bad_sha, garbage, no_json, no_preds, bad_spec):
        assert rid in md
    # one DS seed left: nothing is tested, both comparisons are listed instead
    assert result.significance.empty
    assert sorted(result.too_few_seeds["comparison"]) == ["ds_vs_nds", "ds_vs_teacher"]
    assert "## Groups with too few seeds (listed, not tested)" in md
    assert "| toy resnet56/resnet20 T=2 alpha=0.8 | ds_vs_teacher | 1 | 1 |" in md


def test_different_test_samples_raise_naming_the_runs(tmp_path, ray_local):
    root = str(tmp_path / "store")
    label = np.repeat(np.arange(3), 10)
    same = [write_run(root, make_spec("toy", role, arch, s, **extra), label, label)
            for s in range(2)
            for role, arch, extra in (("teacher", "big", {}), ("nds", "small", {}),
                                      ("ds", "small", dict(teacher_arch="big", temperature=2.0,
                                                           alpha=0.8)))]
    odd = write_run(root, make_spec("toy", "ds", "small", 2, teacher_arch="big", temperature=2.0,
                                    alpha=0.8), label, label, sample_index=np.arange(30) + 1000)
    with pytest.raises(ValueError, match="runs of toy were evaluated on different test samples") \
            as err:
        analysis.run(root, wandb_mode="disabled")
    assert odd in str(err.value) and same[0] in str(err.value)


def test_runs_without_experiment_are_listed(tmp_path, ray_local):
    root = str(tmp_path / "store")
    write_study(root, n_classes=3, per_class=10, seeds=range(2), roles=("teacher", "nds"))
    result = analysis.run(root, wandb_mode="disabled", figures=False)
    assert result.experiments == [] and result.significance.empty
    assert "No distilled-student runs" in result.tables_md
    assert "## Runs no experiment compares (no matching DS runs)" in result.tables_md
    assert len(result.unreferenced) == 4


def test_open_store_and_summarise_predictions(tmp_path):
    root = str(tmp_path / "store")
    rid = write_run(root, make_spec("toy", "teacher", "big", 0), np.array([2, 0, 1, 1]),
                    np.array([2, 1, 1, 0]), sample_index=np.array([3, 1, 2, 0]),
                    attributes={"color": np.array([0, 1, 0, 1])})
    store = open_store(root)
    s = summarise_predictions(store.read_bytes(store.run_path(rid, "predictions.parquet")))
    np.testing.assert_array_equal(s["classes"], [0, 1, 2])
    np.testing.assert_array_equal(s["total"], [1, 2, 1])
    np.testing.assert_array_equal(s["correct"], [0, 1, 1])
    assert [f["attribute"] for f in s["fairness"]] == ["color"]
    # the fingerprint depends on the samples, not on the row order or the predictions
    other = write_run(root, make_spec("toy", "teacher", "big", 1), np.array([1, 1, 0, 2]),
                      np.array([0, 0, 0, 0]), sample_index=np.array([0, 2, 1, 3]))
    s2 = summarise_predictions(store.read_bytes(store.run_path(other, "predictions.parquet")))
    assert s2["fingerprint"] == s["fingerprint"] and s2["fairness"] == []
    json.dumps(s["fairness"])  # plain data, ships through Ray Data
