"""Consistent studies (attribute values by value, class names), run.json's test accuracy, and
one predictions checksum (kdray.store) behind every reader."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from kdray import analysis
from kdray.analysis import read
from kdray.analysis.disagreement import comparison_task
from analysis_store import make_spec, write_run, write_study
from kdray.store import PREDICTIONS, Store

LABEL = np.repeat(np.arange(3), 10)
ROLES = (("teacher", "big", {}), ("nds", "small", {}),
         ("ds", "small", dict(teacher_arch="big", temperature=2.0, alpha=0.8)))


def _study(root: str, attributes=lambda s: {}, record=lambda s: None) -> list[str]:
    return [write_run(root, make_spec("toy", role, arch, s, **extra), LABEL, LABEL,
                      attributes=attributes(s), record=record(s))
            for s in range(2) for role, arch, extra in ROLES]


def test_attribute_values_that_differ_raise_naming_the_runs_and_the_attribute(tmp_path,
                                                                             ray_local):
    root = str(tmp_path / "store")
    male = np.tile([0, 1], 15)
    ids = _study(root, attributes=lambda s: {"male": male, "young": np.zeros(30, int)})
    odd_male = male.copy()
    odd_male[[4, 9]] = 1 - odd_male[[4, 9]]  # same samples, two values differ
    odd = write_run(root, make_spec("toy", "ds", "small", 2, teacher_arch="big",
                                    temperature=2.0, alpha=0.8), LABEL, LABEL,
                    attributes={"male": odd_male, "young": np.zeros(30, int)})
    with pytest.raises(ValueError) as err:
        analysis.run(root, wandb_mode="disabled")
    msg = str(err.value)
    first = sorted(ids + [odd])[0]
    assert f"runs {first} and {odd} of toy disagree on the sensitive attribute 'male'" in msg
    assert "2 of 30 test samples differ, e.g. sample_index 4: 0 vs 1" in msg


def test_a_missing_attribute_raises_too(tmp_path, ray_local):
    root = str(tmp_path / "store")
    ids = _study(root, attributes=lambda s: {"male": np.tile([0, 1], 15)} if s == 0 else {})
    with pytest.raises(ValueError, match=r"disagree on the sensitive attribute 'male'.*"
                                         r"has no column 'attr_male'") as err:
        analysis.run(root, wandb_mode="disabled")
    assert sum(rid in str(err.value) for rid in ids) == 2


def test_class_names_that_differ_raise(tmp_path, ray_local):
    root = str(tmp_path / "store")
    _study(root, record=lambda s: {"class_names": ["a", "b", "c"] if s == 0 else ["a", "b", "x"]})
    with pytest.raises(ValueError, match=r"record different class_names in run.json"):
        analysis.run(root, wandb_mode="disabled")


def test_runs_without_names_take_their_studys_names(tmp_path, ray_local):
    root = str(tmp_path / "store")
    _study(root, record=lambda s: {"class_names": ["a", "b", "c"]} if s == 0 else None)
    analysis.run(root, wandb_mode="disabled", figures=False)
    cls = pq.read_table(f"{root}/analysis/class_tests.parquet").to_pandas()
    assert len(cls) and (cls["class_name"] == [("a", "b", "c")[c] for c in cls["class"]]).all()


def test_test_accuracy_is_run_jsons_and_computed_only_without_it(tmp_path, ray_local):
    root = str(tmp_path / "store")
    recorded = write_run(root, make_spec("toy", "teacher", "big", 0), LABEL, LABEL,
                         record={"test_accuracy": 0.25})  # predictions say 1.0
    older = write_run(root, make_spec("toy", "teacher", "big", 1), LABEL,
                      np.where(np.arange(30) < 6, (LABEL + 1) % 3, LABEL))
    store = Store(root)
    rec = store.read_run_json(older)
    del rec["test_accuracy"]
    store.write_run_json(older, rec)
    result = analysis.run(root, wandb_mode="disabled", figures=False)
    acc = dict(zip(result.runs["run_id"], result.runs["test_accuracy"]))
    assert acc == {recorded: 0.25, older: pytest.approx(24 / 30)}
    assert "| toy | teacher | big | 2 | 52.50 ± 38.89 |" in result.tables_md


def test_bad_optional_run_json_fields_skip_the_run_named(tmp_path, ray_local):
    root = str(tmp_path / "store")
    ids = _study(root, record=lambda s: {"class_names": "abc"} if s == 0 else None)
    result = analysis.run(root, wandb_mode="disabled", figures=False)
    assert len(result.summary.skipped) == 3
    bad = next(iter(result.summary.skipped))
    assert bad in ids and result.summary.details[bad] == "class_names is not a list of strings"


def test_every_reader_verifies_the_checksum_with_the_store(tmp_path, monkeypatch):
    root = str(tmp_path / "store")
    made = write_study(root, n_classes=3, per_class=10, seeds=range(2), temperatures=(2.0,))
    store = Store(root)
    calls, verified = [], Store.read_verified_predictions

    def spy(self, run_id, sha):
        calls.append(run_id)
        return verified(self, run_id, sha)

    monkeypatch.setattr(Store, "read_verified_predictions", spy)
    t, d = made["teacher"][0], made["ds"][0]
    sha = {r: store.read_run_json(r)["predictions_sha256"] for r in (t, d)}

    assert store.status(t).complete and calls == [t]
    row = read._read_task(store, "numpy", {"run_id": t, "sha": sha[t]})
    assert row["status"] == "ok" and calls[-1] == t
    out = comparison_task(store, {"name": "x", "pairs": json.dumps([[0, t, d, sha[t], sha[d]]])})
    assert out["name"] == "x" and calls[-2:] == [t, d]
    n = len(calls)
    assert analysis.unchanged_tables(root) is None  # no analysis yet: nothing read
    analysis_dir = store.path("analysis")
    store.write_bytes(f"{analysis_dir}/manifest.json", json.dumps(
        {"runs": {r: store.read_run_json(r)["predictions_sha256"] for r in store.list_run_ids()},
         "level": 0.05, "normalisation": "ratio"}).encode())
    store.write_bytes(f"{analysis_dir}/tables.md", b"# old tables\n")
    assert analysis.unchanged_tables(root) == "# old tables\n"
    assert set(calls[n:]) == set(store.list_run_ids())  # the cache check verified every run

    # a mismatch, as each reader reports it
    other = store.read_bytes(store.run_path(d, PREDICTIONS))
    store.write_bytes(store.run_path(t, PREDICTIONS), other)
    assert store.status(t).reason == "predictions_sha256 does not match predictions.parquet"
    assert read._read_task(store, "numpy", {"run_id": t, "sha": sha[t]})["status"] == \
        "checksum mismatch"
    with pytest.raises(ValueError, match=f"run {t}: predictions.parquet changed"):
        comparison_task(store, {"name": "x", "pairs": json.dumps([[0, t, d, sha[t], sha[d]]])})
    assert analysis.unchanged_tables(root) is None


def _kd_runs(root: str, ds_variants: list[dict]) -> None:
    for s in range(2):
        for role, arch, extra in ROLES[:2]:
            write_run(root, make_spec("toy", role, arch, s, **extra), LABEL, LABEL)
        for variant in ds_variants:
            write_run(root, make_spec("toy", "ds", "small", s, **ROLES[2][2], **variant),
                      LABEL, LABEL)


def _members(result) -> dict[str, list[str]]:
    runs = result.runs.sort_values(["role", "seed"])
    return {study: list(sub["role"]) for study, sub in runs.groupby("study")}


def test_teachers_and_nds_serve_ds_runs_without_the_t_squared_factor(tmp_path, ray_local):
    """A teacher has no KD term: DS runs with ``kd_t_squared: false`` are compared with it."""
    root = str(tmp_path / "store")
    _kd_runs(root, [{"kd_t_squared": False}])
    result = analysis.run(root, wandb_mode="disabled")
    assert _members(result) == {"": ["ds", "ds", "nds", "nds", "teacher", "teacher"]}
    (exp,) = result.experiments
    assert len(exp.ds) == len(exp.nds) == len(exp.teacher) == 2


def test_both_kd_terms_in_one_store_are_two_studies_sharing_the_teachers(tmp_path, ray_local):
    root = str(tmp_path / "store")
    _kd_runs(root, [{}, {"kd_t_squared": False}])
    result = analysis.run(root, wandb_mode="disabled")
    both = ["ds", "ds", "nds", "nds", "teacher", "teacher"]
    assert _members(result) == {"kd_t_squared=None": both, "kd_t_squared=False": both}
    assert [len(e.teacher) for e in result.experiments] == [2, 2]
    assert len(result.unreferenced) == 0


def test_collapsed_runs_are_named_and_kept_out(tmp_path, ray_local):
    """A DS that learned nothing (10 classes, one class always predicted: balanced accuracy
    10 %, the bar 19 %) is named in tables.md and beside the paper, and kept out of every
    number: the temperature whose every seed collapsed keeps its row, with no run in it."""
    root = str(tmp_path / "store")
    made = write_study(root, seeds=range(3), temperatures=(2.0, 4.0), noise=0.0,
                       ds_acc={2.0: 0.8, 4.0: [1.0] + [0.0] * 9})
    result = analysis.run(root, wandb_mode="disabled")
    low = sorted(result.collapsed["run_id"])
    assert low == sorted(r for r in made["ds"] if "-T4-" in r) and len(low) == 3
    assert result.collapsed["balanced_accuracy"].tolist() == [0.1, 0.1, 0.1]
    assert ("## Collapsed runs (3 of 12: at chance, kept out of every number)"
            in result.tables_md)
    assert all(rid in result.tables_md for rid in low)
    assert "- collapsed runs (at chance): 3 of 12, kept out of every number" in result.epilogue
    t4 = result.runs[result.runs["run_id"].isin(low)]
    assert t4["collapsed"].all() and t4["test_accuracy"].tolist() == [0.1, 0.1, 0.1]
    t4 = next(e for e in result.experiments if e.temperature == 4.0)
    assert t4.ds == () and len(t4.nds) == 3  # its row stays, with no run in it
    assert not result.significance["temperature"].eq(4.0).any()
    assert "| DS | 4 | – | n/a | n/a | n/a | n/a | n = 0 of 3 (3 collapsed) |" in result.tables_md