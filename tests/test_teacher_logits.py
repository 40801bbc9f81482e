"""A DS cohort records its teacher's logits in the store and a later cohort of the same data
stream (an extension to new temperatures) replays them, running no teacher, and ends with
exactly the weights and predictions it would have without them (CPU). Resumed cohorts,
damaged tables, other data streams and the size limit fall back to the teacher."""

import warnings

import pytest
import torch
from pyarrow.fs import FileSelector

from conftest import STABLE_LR
from kdray import RunSpec
from kdray.store import Store
from kdray.trial import run, run_cohort
from kdray.trial.steps import TrialOptions, prepare
from kdray.trial import teacher_logits

pytestmark = pytest.mark.trains
RECIPE = dict(dataset="digits", epochs=2, batch_size=64, data={"image_size": 16}, lr=STABLE_LR)
TEACHER = RunSpec(role="teacher", arch="resnet20", **RECIPE)


def ds(temperature, alpha=0.8, seed=0):
    return RunSpec(role="ds", arch="lenet5", teacher_arch="resnet20", temperature=temperature,
                   alpha=alpha, seed=seed, **RECIPE)


def with_teacher(uri) -> Store:
    store = Store(uri)
    run(TEACHER, store, device="cpu")
    return store


def table_files(store: Store) -> list[str]:
    """The paths of the teacher's recorded tables."""
    found = store.fs.get_file_info(FileSelector(store.path("teacher_logits", TEACHER.run_id),
                                                allow_not_found=True))
    return [f.path for f in found if f.path.endswith(".safetensors")]


def test_a_later_cohort_replays_the_logits_and_ends_exactly_as_without(store_uri, tmp_path,
                                                                       monkeypatch):
    store = with_teacher(store_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no table yet is not "unreadable"
        first = run_cohort([ds(1.0)], store, device="cpu")
    assert first[ds(1.0).run_id]["teacher_logits"] == "computed and recorded"
    assert len(table_files(store)) == 1
    later = run_cohort([ds(20.0), ds(30.0, alpha=0.6)], store, device="cpu")
    for record in later.values():
        assert record["teacher_logits"].startswith("replayed from ")
        assert record["teacher_logits"].endswith(table_files(store)[0][len(store.root) + 1:])

    monkeypatch.setenv("KDRAY_TEACHER_LOGITS_MB", "0")  # the same cohort, its teacher running
    plain = with_teacher(tmp_path / "plain")
    assert plain.read_run_json(TEACHER.run_id)["model_sha256"] == \
        store.read_run_json(TEACHER.run_id)["model_sha256"]
    alone = run_cohort([ds(20.0), ds(30.0, alpha=0.6)], plain, device="cpu")
    for run_id, record in alone.items():
        assert record["teacher_logits"].startswith("computed (the table")
        for key in ("predictions_sha256", "model_sha256", "test_accuracy"):
            assert record[key] == later[run_id][key], (run_id, key)
    assert table_files(plain) == []


def test_a_damaged_table_is_recomputed_and_written_again(tmp_path):
    store = with_teacher(tmp_path / "s")
    run_cohort([ds(1.0)], store, device="cpu")
    path = table_files(store)[0]
    good = store.read_bytes(path)
    store.write_bytes(path, b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        result = run_cohort([ds(2.0)], store, device="cpu")
    assert result[ds(2.0).run_id]["teacher_logits"] == "computed and recorded"
    assert store.read_bytes(path) == good  # the same logits, recorded again


def test_a_resumed_cohort_neither_replays_a_partial_nor_records(tmp_path):
    store = with_teacher(tmp_path / "s")
    trainer, _ = prepare([ds(1.0)], store, TrialOptions(device="cpu"))
    trainer.train_epoch()  # as if restored at epoch 1
    path, how = teacher_logits.attach(trainer, store, ds(1.0))
    assert path is None and how.startswith("computed (resumed")
    assert trainer.teacher_logits is None


def test_the_table_is_one_per_data_stream_teacher_and_device(tmp_path):
    store = with_teacher(tmp_path / "s")
    cpu = torch.device("cpu")
    path = teacher_logits.logits_name(store, ds(1.0), cpu)
    assert teacher_logits.logits_name(store, ds(40.0, alpha=0.6), cpu) == path  # one cohort key
    run(RunSpec(role="teacher", arch="resnet20", seed=1, **RECIPE), store, device="cpu")
    assert teacher_logits.logits_name(store, ds(1.0, seed=1), cpu) != path  # other batches
    other = RunSpec(role="ds", arch="lenet5", teacher_arch="resnet20", temperature=1.0,
                    alpha=0.8, **{**RECIPE, "epochs": 3})
    assert teacher_logits.logits_name(store, other, cpu).split("/")[2] != path.split("/")[2]


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_a_bad_limit_is_named(monkeypatch, value):
    monkeypatch.setenv("KDRAY_TEACHER_LOGITS_MB", value)
    with pytest.raises(ValueError, match=rf"KDRAY_TEACHER_LOGITS_MB: '{value}' is not an integer"):
        teacher_logits.limit_mb()
