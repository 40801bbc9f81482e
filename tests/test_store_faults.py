"""A real sweep's store, damaged: teachers are verified on every sweep (a damaged one is
trained again even with no student pending), and damaged files of any run are named by the
dry run and the analysis and repaired by the next sweep, never a crash."""

import uuid

import pyarrow.fs as pafs
import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray.store import MODEL, PREDICTIONS, RUN_JSON, Store
from kdray.sweep.cli import sweep_main
from kdray.sweep.driver import run_sweep
from kdray.sweep.grid import Experiment, expand

pytestmark = [pytest.mark.ray, pytest.mark.trains]
EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0,),
                 recipe={"epochs": 1, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
PLAN = expand([EXP])
TEACHER, NDS, DS = PLAN.teachers[0], PLAN.nds[0], PLAN.ds[0]


@pytest.fixture(scope="module", params=["local", "s3"])
def swept(request, ray_local, data_root, tmp_path_factory):
    """A store with every run of EXP committed by a sweep."""
    if request.param == "local":
        uri = str(tmp_path_factory.mktemp("faults") / "store")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"kdray-{uuid.uuid4().hex[:12]}"
        pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                          endpoint_override=f"http://{endpoint}",
                          allow_bucket_creation=True).create_dir(bucket)
        uri = (f"s3://testing:testing@{bucket}/study?endpoint_override={endpoint}"
               f"&scheme=http&region=us-east-1")
    report = run_sweep([EXP], uri, data_dir=data_root)
    assert report.ok and len(report.ran) == 3, report.format()
    return Store(uri)


def _overwrite(store: Store, run_id: str, name: str, at: int, data: bytes) -> None:
    path = store.run_path(run_id, name)
    old = store.read_bytes(path)
    store.write_bytes(path, old[:at] + data + old[at + len(data):])


def test_a_damaged_teacher_is_trained_again_with_no_student_pending(swept, data_root):
    size = len(swept.read_bytes(swept.run_path(TEACHER.run_id, MODEL)))
    _overwrite(swept, TEACHER.run_id, MODEL, size // 2, b"\xde\xad\xbe\xef" * 2)  # same size
    report = run_sweep([EXP], swept, data_dir=data_root)
    assert report.ok and report.ran == [TEACHER.run_id], report.format()
    assert TEACHER.run_id in report.trained_again and "TRAINED AGAIN" in report.format()
    assert swept.status(TEACHER.run_id, verify_model=True).complete
    record = swept.read_run_json(TEACHER.run_id)
    assert (record["model_etag"] is None) == swept.is_local  # S3: verified by one HEAD


def test_a_damaged_store_is_named_then_repaired(swept, data_root, tmp_path, capsys):
    from kdray import analysis

    swept.write_bytes(swept.run_path(DS.run_id, RUN_JSON), b'"not a record"')  # JSON, not an object
    _overwrite(swept, NDS.run_id, PREDICTIONS, 0, b"\x00" * 8)
    assert sweep_main([EXP], ["--store", swept.uri, "--dry-run", "--plan",
                              str(tmp_path / "plan.json")]) == 0
    assert "2 runs in 2 trials" in capsys.readouterr().out
    result = analysis.run(swept.uri, wandb_mode="disabled", figures=False)
    assert result.summary.skipped == {DS.run_id: "unreadable run.json",
                                      NDS.run_id: "checksum mismatch"}
    report = run_sweep([EXP], swept, data_dir=data_root)
    assert report.ok and sorted(report.ran) == sorted([NDS.run_id, DS.run_id]), report.format()
    assert report.trained_again[DS.run_id] == "run.json: run.json is a string, expected an object"
    result = analysis.run(swept.uri, wandb_mode="disabled", figures=False)
    assert result.summary.skipped == {} and result.summary.n_read == 3
