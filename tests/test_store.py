"""The store, on a local folder and on a real S3-protocol server (moto on 127.0.0.1)."""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from kdray import RunSpec
from kdray.store import PREDICTION_FIELDS, Store, predictions_table, redact, sha256_bytes

SPEC = RunSpec(dataset="trifeature-shape", role="ds", arch="lenet5", teacher_arch="resnet20",
               temperature=4, alpha=0.8, seed=1)


def _commit(store, spec=SPEC, n=10):
    table = predictions_table(spec.run_id, spec.to_dict(), np.arange(n), np.arange(n) % 3,
                              np.zeros(n, dtype=int), {"color": np.arange(n) % 2, "texture": np.ones(n)})
    sha = store.write_predictions(spec.run_id, table)
    store.write_model(spec.run_id, {"w": torch.ones(2, 2)})
    store.write_run_json(spec.run_id, {"run_id": spec.run_id, "spec": spec.to_dict(),
                                       "predictions_sha256": sha})
    return table, sha


def test_predictions_follow_the_contract(store_uri):
    store = Store(store_uri)
    table, sha = _commit(store)
    back = store.read_predictions(SPEC.run_id)
    assert back.schema.names == [f.name for f in PREDICTION_FIELDS] + ["attr_color", "attr_texture"]
    assert [str(t) for t in back.schema.types] == ["string"] * 5 + ["double", "double"] + ["int64"] * 6
    assert back.equals(table)
    row = back.slice(0, 1).to_pylist()[0]
    assert row["role"] == "ds" and row["teacher_arch"] == "resnet20" and row["temperature"] == 4.0
    assert sha == sha256_bytes(store.read_bytes(store.run_path(SPEC.run_id, "predictions.parquet")))


def test_teacher_rows_have_null_ds_columns():
    t = SPEC.teacher_spec()
    table = predictions_table(t.run_id, t.to_dict(), np.arange(3), np.zeros(3), np.zeros(3))
    row = table.to_pylist()[0]
    assert row["teacher_arch"] is None and row["temperature"] is None and row["alpha"] is None


def test_completeness(store_uri):
    store = Store(store_uri)
    assert not store.is_complete(SPEC.run_id) and store.status(SPEC.run_id).reason == "no run.json"
    _commit(store)
    assert store.is_complete(SPEC.run_id)
    assert store.list_run_ids() == [SPEC.run_id]
    assert store.read_model(SPEC.run_id)["w"].sum().item() == 4
    # a predictions file that changed after the commit no longer verifies
    store.write_bytes(store.run_path(SPEC.run_id, "predictions.parquet"), b"garbage")
    st = store.status(SPEC.run_id)
    assert not st.complete and "sha256" in st.reason
    other = SPEC.replace(seed=2)
    statuses = store.statuses([SPEC.run_id, other.run_id])
    assert [s.complete for s in statuses.values()] == [False, False]
    assert statuses[other.run_id].reason == "missing"


def test_run_json_without_checksum_is_refused(tmp_path):
    with pytest.raises(ValueError, match="predictions_sha256"):
        Store(tmp_path).write_run_json("x", {"run_id": "x"})


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = Store(tmp_path / "s")
    _commit(store)
    names = sorted(p.name for p in (tmp_path / "s" / "runs" / SPEC.run_id).iterdir())
    assert names == ["model.safetensors", "predictions.parquet", "run.json"]


def test_store_hides_credentials(s3_uri):
    store = Store(s3_uri)
    assert "testing:testing" not in str(store) and "testing:testing" not in repr(store)
    assert redact("s3://AKIA:SECRET@bucket/p?x=1") == "s3://***@bucket/p?x=1"


def test_bad_store_uri_is_named():
    with pytest.raises(ValueError, match="store: 'nope://x'"):
        Store("nope://x")
