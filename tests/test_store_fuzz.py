"""Every damaged or foreign file in the store is a named problem, never a crash.

Each case damages one file of a committed store (teacher, NDS and DS of one seed: run.json,
predictions.parquet, model.safetensors, or a foreign plan.json / checkpoint.json /
manifest.json) and then runs what reads the store without training: the sweep's status
(teachers' weights verified), ``--dry-run``, the analysis's reading of run.json and of the
predictions, the analysis cache check and the sweep's search for earlier checkpoints. The
damaged run must be incomplete (the sweep trains it again) or skipped by the analysis with a
named reason; nothing may raise. ``tests/test_store_faults.py`` runs the real sweep and
analysis on a few of these cases.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kdray.analysis.cache import unchanged_tables
from kdray.analysis.outputs import MANIFEST
from kdray.analysis.read import ReadSummary, _read_task, read_run_records
from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray.store import MODEL, PREDICTIONS, RUN_JSON, Store, predictions_table, sha256_bytes
from kdray.sweep.checkpoints import earlier_checkpoints
from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment, expand
from kdray.sweep.plan import plan_statuses

EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0,),
                 recipe={"epochs": 1, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
PLAN = expand([EXP])
TEACHER, DS = PLAN.teachers[0], PLAN.ds[0]
RNG = np.random.default_rng(0)


def commit(store: Store) -> None:
    """The three runs of PLAN, committed as a trial commits them (no training)."""
    for spec in PLAN.all:
        n = 20
        table = predictions_table(spec.run_id, spec.to_dict(), np.arange(n), np.arange(n) % 10,
                                  np.arange(n) % 10, {"color": np.arange(n) % 2})
        sha = store.write_predictions(spec.run_id, table)
        model_sha = store.write_model(spec.run_id, {"w": torch.arange(64.0)})
        store.write_run_json(spec.run_id, {
            "run_id": spec.run_id, "spec": spec.to_dict(), "predictions_sha256": sha,
            "model_sha256": model_sha, "test_accuracy": 1.0, "n_test": n,
            "model_etag": store.etag(store.run_path(spec.run_id, MODEL)),  # S3 only
            "class_names": [str(c) for c in range(10)]})


def _record(**change):
    def damage(data: bytes) -> bytes:
        rec = json.loads(data)
        for key, value in change.items():
            if value is DROP:
                rec.pop(key)
            else:
                rec[key] = value
        return json.dumps(rec).encode()
    return damage


def _spec(**change):
    def damage(data: bytes) -> bytes:
        rec = json.loads(data)
        rec["spec"] = {k: v for k, v in {**rec["spec"], **change}.items() if v is not DROP}
        return json.dumps(rec).encode()
    return damage


def _overwrite8(data: bytes) -> bytes:
    at = len(data) // 2
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + 8]) + data[at + 8:]


def _foreign_parquet(data: bytes) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1, 2, 3]}), buf)
    return buf.getvalue().to_pybytes()


DROP = object()
TRUNCATE = lambda b: b[: len(b) // 2]  # noqa: E731
RANDOM = lambda b: RNG.bytes(max(len(b), 16))  # noqa: E731
JSON_VALUES = {"a list": b"[1, 2]", "a string": b'"run"', "a number": b"42", "null": b"null",
               "true": b"true", "an empty object": b"{}"}
RUN_JSON_CASES = {
    "truncated": TRUNCATE, "empty": lambda b: b"", "random bytes": RANDOM,
    **{f"JSON {name}": (lambda v: lambda b: v)(v) for name, v in JSON_VALUES.items()},
    "no predictions_sha256": _record(predictions_sha256=DROP), "no spec": _record(spec=DROP),
    "predictions_sha256 a number": _record(predictions_sha256=5),
    "predictions_sha256 null": _record(predictions_sha256=None),
    "predictions_sha256 of other bytes": _record(predictions_sha256="0" * 64),
    "spec a string": _record(spec="teacher"), "spec a list": _record(spec=[1]),
    "spec without role": _spec(role=DROP), "spec role a number": _spec(role=3),
    "spec seed a string": _spec(seed="0"), "model_sha256 a list": _record(model_sha256=[1]),
    "model_etag a number": _record(model_etag=7),
    "test_accuracy a string": _record(test_accuracy="high"),
    "test_accuracy 2": _record(test_accuracy=2.0), "class_names a number": _record(class_names=5),
}
PREDICTIONS_CASES = {"truncated": TRUNCATE, "empty": lambda b: b"", "random bytes": RANDOM,
                     "8 bytes overwritten": _overwrite8, "another table": _foreign_parquet}
MODEL_CASES = {"truncated": TRUNCATE, "empty": lambda b: b"", "random bytes": RANDOM,
               "8 bytes overwritten": _overwrite8}


def _read_everything(store: Store, tmp_path) -> dict:
    """Everything that reads the store without training; returns the statuses."""
    status = plan_statuses(store, PLAN)  # the sweep's view (teachers' weights verified)
    assert sweep_main([EXP], ["--store", store.uri, "--dry-run", "--plan",
                              str(tmp_path / "plan.json")]) == 0
    summary = ReadSummary(store.uri)
    records = read_run_records(store, summary)
    for rid, rec in records.items():  # the analysis's per-run task, without Ray
        row = _read_task(store, "numpy", {"run_id": rid, "sha": rec["predictions_sha256"]})
        if row["status"] != "ok":
            summary.skip(rid, row["status"], row["detail"])
    unchanged_tables(store.uri)
    earlier_checkpoints(store, {s.run_id for s in PLAN.all})
    return {"status": status, "summary": summary}


def _damage(store: Store, run_id: str, name: str, damage) -> None:
    path = store.run_path(run_id, name)
    store.write_bytes(path, damage(store.read_bytes(path)))


@pytest.mark.parametrize("case", sorted(RUN_JSON_CASES))
def test_damaged_run_json(case, tmp_path):
    store = Store(tmp_path / "store")
    commit(store)
    _damage(store, DS.run_id, RUN_JSON, RUN_JSON_CASES[case])
    seen = _read_everything(store, tmp_path)
    st = seen["status"][DS.run_id]
    assert not st.complete and st.reason, st  # the sweep trains it again, saying why
    assert seen["summary"].skipped[DS.run_id] in ("unreadable run.json", "invalid spec in run.json",
                                                  "checksum mismatch")
    assert [s.complete for r, s in seen["status"].items() if r != DS.run_id] == [True, True]


@pytest.mark.parametrize("case", sorted(PREDICTIONS_CASES) + ["deleted"])
def test_damaged_predictions(case, tmp_path):
    store = Store(tmp_path / "store")
    commit(store)
    if case == "deleted":
        store.fs.delete_file(store.run_path(TEACHER.run_id, PREDICTIONS))
    else:
        _damage(store, TEACHER.run_id, PREDICTIONS, PREDICTIONS_CASES[case])
    seen = _read_everything(store, tmp_path)
    assert not seen["status"][TEACHER.run_id].complete
    assert seen["summary"].skipped[TEACHER.run_id] in (
        "checksum mismatch", f"no {PREDICTIONS}", f"unreadable {PREDICTIONS}")


def test_foreign_predictions_with_a_matching_checksum(tmp_path):
    """A run.json rewritten to match a table that is not a predictions table."""
    store = Store(tmp_path / "store")
    commit(store)
    _damage(store, TEACHER.run_id, PREDICTIONS, _foreign_parquet)
    sha = sha256_bytes(store.read_bytes(store.run_path(TEACHER.run_id, PREDICTIONS)))
    _damage(store, TEACHER.run_id, RUN_JSON, _record(predictions_sha256=sha))
    seen = _read_everything(store, tmp_path)
    st = seen["status"][TEACHER.run_id]
    assert not st.complete and "has no column(s) ['sample_index', 'label', 'pred']" in st.reason
    assert seen["summary"].skipped[TEACHER.run_id] == f"unreadable {PREDICTIONS}"


@pytest.mark.parametrize("case", sorted(MODEL_CASES) + ["deleted"])
def test_damaged_teacher_weights(case, store_uri, monkeypatch):
    store = Store(store_uri)
    commit(store)
    if case == "deleted":
        store.fs.delete_file(store.run_path(TEACHER.run_id, MODEL))
    else:
        _damage(store, TEACHER.run_id, MODEL, MODEL_CASES[case])
    if not store.is_local:  # S3: the weights' ETag is compared, the weights never downloaded
        read = store.read_bytes
        monkeypatch.setattr(store, "read_bytes", lambda path: (
            pytest.fail(f"downloaded {path}") if path.endswith(MODEL) else read(path)))
    status = plan_statuses(store, PLAN)
    assert not status[TEACHER.run_id].complete  # trained again, whether or not a DS needs it
    assert status[TEACHER.run_id].reason == (
        f"no {MODEL}" if case == "deleted" else f"model_sha256 does not match {MODEL}"
        if store.is_local else f"{MODEL} changed since run.json was written (ETag)")
    monkeypatch.undo()
    with pytest.raises((ValueError, FileNotFoundError), match=MODEL):
        store.read_model(TEACHER.run_id, verify=True)  # no student is distilled from it


@pytest.mark.parametrize("where", ["plan.json", "runs/plan.json", "runs/{run}/plan.json",
                                   "runs/not-a-run/run.json", "tune/stage1-x/t/checkpoint.json",
                                   f"analysis/{MANIFEST}", "leases/runs/{run}.json"])
@pytest.mark.parametrize("content", [b"\x00\xff garbage", b"null", b"[1]", b'{"runs": 3}'])
def test_foreign_files(where, content, tmp_path):
    store = Store(tmp_path / "store")
    commit(store)
    store.write_bytes(store.path(where.format(run=DS.run_id)), content)
    seen = _read_everything(store, tmp_path)
    assert all(s.complete for s in seen["status"].values())
    if where == "runs/not-a-run/run.json":
        assert seen["summary"].skipped == {"not-a-run": "unreadable run.json"}
    else:
        assert seen["summary"].skipped == {}


def test_dry_run_refuses_a_plan_path_that_is_a_folder(tmp_path, capsys):
    assert sweep_main([EXP], ["--store", str(tmp_path / "s"), "--dry-run",
                              "--plan", str(tmp_path)]) == 2
    assert f"--plan: '{tmp_path}' is not a file path" in capsys.readouterr().err


SPEC_FILES = {"truncated": lambda d: json.dumps(d)[:20], "random bytes": lambda d: RNG.bytes(64),
              **{f"JSON {name}": (lambda v: lambda d: v)(v) for name, v in JSON_VALUES.items()},
              "no role": lambda d: json.dumps({k: v for k, v in d.items() if k != "role"}),
              "dataset a number": lambda d: json.dumps({**d, "dataset": 5}),
              "data a number": lambda d: json.dumps({**d, "data": 3}),
              "lr_milestones a number": lambda d: json.dumps({**d, "lr_milestones": 3}),
              "a run.json whose spec is a string": lambda d: json.dumps({"spec": "nds"}),
              "seed a string": lambda d: json.dumps({**d, "seed": "0"})}


@pytest.mark.parametrize("case", sorted(SPEC_FILES))
def test_trial_spec_files_that_are_not_a_spec(case, tmp_path, capsys):
    from kdray.trial import main

    path = tmp_path / "spec.json"
    content = SPEC_FILES[case](PLAN.nds[0].to_dict())
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["--store", str(tmp_path / "store"), "--spec", str(path),
                 "--wandb-mode", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --specs {path}: "), err
