"""End to end: a teacher, an NDS and a DS trial on small Trifeature commit a store that
follows the data contract (on a local folder and on moto's S3); failures are clear."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray import RunSpec
from kdray.store import PREDICTION_FIELDS, Store, sha256_bytes
from kdray.trial import TeacherMissingError, run
from kdray.trial.cli import main as _trial_main

pytestmark = pytest.mark.trains
RECIPE = dict(epochs=1, batch_size=100, lr=STABLE_LR, data=TINY_TRIFEATURE)
TEACHER = RunSpec(dataset="trifeature-shape", role="teacher", arch="resnet20", seed=0, **RECIPE)
NDS = RunSpec(dataset="trifeature-shape", role="nds", arch="lenet5", seed=0, **RECIPE)
DS = RunSpec(dataset="trifeature-shape", role="ds", arch="lenet5", teacher_arch="resnet20",
             temperature=4.0, alpha=0.8, seed=0, **RECIPE)


def trial_main(argv: list[str], capsys) -> subprocess.CompletedProcess:
    """``python -m kdray.trial ARGV`` in this process: its exit code and what it printed."""
    capsys.readouterr()
    code = _trial_main(argv)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


def test_teacher_nds_ds_commit_a_contract_store(store_uri, data_root):
    store = Store(store_uri)
    records = {s.role: run(s, store, device="cpu", data_root=data_root, num_workers=0)
               for s in (TEACHER, NDS, DS)}
    assert sorted(store.list_run_ids()) == sorted(s.run_id for s in (TEACHER, NDS, DS))
    for spec in (TEACHER, NDS, DS):
        assert store.is_complete(spec.run_id)
        record = store.read_run_json(spec.run_id)
        assert record["spec"] == spec.to_dict() and record["run_id"] == spec.run_id
        assert record["predictions_sha256"] == sha256_bytes(
            store.read_bytes(store.run_path(spec.run_id, "predictions.parquet")))
        for key in ("test_accuracy", "per_class_accuracy", "n_test", "wall_seconds", "started",
                    "finished", "code_version", "torch_version", "device"):
            assert key in record, key
        assert record["cuda_graph"] == "not on CUDA"  # why the step ran eagerly
        table = store.read_predictions(spec.run_id)
        assert table.schema.names == [f.name for f in PREDICTION_FIELDS] + ["attr_color", "attr_texture"]
        df = table.to_pandas()
        assert len(df) == 1000 and record["n_test"] == 1000
        assert (df.run_id == spec.run_id).all() and (df.role == spec.role).all()
        assert df.sample_index.tolist() == list(range(1000))
        assert sorted(df.label.unique()) == list(range(10))
        assert sorted(df.attr_color.unique()) == list(range(10))
        assert df.pred.between(0, 9).all()
        acc = float((df.pred == df.label).mean())
        assert record["test_accuracy"] == pytest.approx(acc)
        per_class = [float((df.pred[df.label == c] == c).mean()) for c in range(10)]
        assert record["per_class_accuracy"] == pytest.approx(per_class)
    ds = store.read_predictions(DS.run_id).to_pandas()
    assert (ds.teacher_arch == "resnet20").all() and (ds.temperature == 4.0).all() and (ds.alpha == 0.8).all()
    assert store.read_predictions(TEACHER.run_id).to_pandas().temperature.isna().all()
    assert records["ds"]["teacher_run_id"] == TEACHER.run_id


def test_ds_without_its_teacher_fails_clearly_before_training(tmp_path, data_root):
    with pytest.raises(TeacherMissingError) as e:
        run(DS, Store(tmp_path / "empty"), device="cpu", data_root=data_root)
    assert TEACHER.run_id in str(e.value) and DS.run_id in str(e.value)
    assert not (tmp_path / "empty" / "runs").exists()  # nothing written


def test_command_line(tmp_path, data_root, capsys):
    store = tmp_path / "cli"
    args = [sys.executable, "-m", "kdray.trial", "--store", str(store), "--data-dir", data_root,
            "--dataset", "trifeature-shape", "--role", "nds", "--arch", "lenet5", "--epochs", "1",
            "--batch-size", "100", "--lr", str(STABLE_LR), "--wandb-mode", "disabled", "--data",
            *[f"{k}={v}" for k, v in TINY_TRIFEATURE.items()]]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"{NDS.run_id}: test accuracy" in out.stdout
    assert Store(store).is_complete(NDS.run_id)
    # the same run from a JSON spec file
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(NDS.to_dict()))
    # the command's other calls in process (what a subprocess adds, its start, is shown above)
    again = trial_main(["--store", str(tmp_path / "cli2"), "--data-dir", data_root,
                        "--spec", str(spec_file), "--wandb-mode", "disabled"], capsys)
    assert again.returncode == 0, again.stderr
    a = Store(store).read_predictions(NDS.run_id).column("pred").to_numpy()
    b = Store(tmp_path / "cli2").read_predictions(NDS.run_id).column("pred").to_numpy()
    assert np.array_equal(a, b)  # CPU training with a given seed is deterministic
    # bad input: a clear one-line error and exit 2, before any work
    bad = trial_main(["--store", str(store), "--dataset", "trifeature-shape", "--role", "ds",
                      "--arch", "lenet5", "--teacher-arch", "resnet20", "--temperature", "-2",
                      "--alpha", "0.8"], capsys)
    assert bad.returncode == 2 and "--temperatures: -2.0 is not > 0" in bad.stderr


def test_command_line_runs_a_cohort_with_one_teacher(tmp_path, data_root, capsys):
    """Several temperatures/alphas (or several --spec files) train as one cohort, without Ray;
    each run is committed as it would be alone."""
    store = Store(tmp_path / "store")
    run(TEACHER, store, device="cpu", data_root=data_root, num_workers=0)
    common = ["--store", str(tmp_path / "store"), "--data-dir", data_root, "--wandb-mode", "disabled"]
    args = [sys.executable, "-m", "kdray.trial", *common, "--dataset", "trifeature-shape",
            "--role", "ds", "--arch", "lenet5", "--teacher-arch", "resnet20", "--epochs", "1",
            "--batch-size", "100", "--lr", str(STABLE_LR), "--temperature", "2", "4", "--alpha", "0.6",
            "0.8", "--data",
            *[f"{k}={v}" for k, v in TINY_TRIFEATURE.items()]]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    specs = [DS.replace(temperature=t, alpha=a) for t in (2.0, 4.0) for a in (0.6, 0.8)]
    for spec in specs:
        assert f"{spec.run_id}: test accuracy" in out.stdout
        record = store.read_run_json(spec.run_id)
        assert record["cohort"] == [s.run_id for s in specs] and "model_sha256" in record
    # the same two runs from spec files, alone each: the same predictions
    lone = Store(tmp_path / "lone")
    lone.write_bytes(lone.run_path(TEACHER.run_id, "model.safetensors"),
                     store.read_bytes(store.run_path(TEACHER.run_id, "model.safetensors")))
    for name in ("predictions.parquet", "run.json"):
        lone.write_bytes(lone.run_path(TEACHER.run_id, name),
                         store.read_bytes(store.run_path(TEACHER.run_id, name)))
    for spec in specs[:2]:
        (tmp_path / f"{spec.run_id}.json").write_text(json.dumps(spec.to_dict()))
        alone = trial_main(["--store", str(tmp_path / "lone"), "--data-dir", data_root,
                            "--wandb-mode", "disabled", "--spec", str(tmp_path / f"{spec.run_id}.json")],
                           capsys)
        assert alone.returncode == 0, alone.stderr
        assert np.array_equal(lone.read_predictions(spec.run_id).column("pred").to_numpy(),
                              store.read_predictions(spec.run_id).column("pred").to_numpy())
    other_seed = tmp_path / "seed1.json"
    other_seed.write_text(json.dumps(specs[0].replace(seed=1).to_dict()))
    mixed = trial_main([*common, "--spec", str(tmp_path / f"{specs[0].run_id}.json"),
                        str(other_seed)], capsys)
    assert mixed.returncode == 2 and "differ in more than temperature and alpha" in mixed.stderr
    # a student that diverges (T = 1e-39 overflows the soft targets) fails alone, saying what to try
    diverged = trial_main(args[3:args.index("--temperature")] + ["--temperature", "1e-39", "2",
                          "--alpha", "0.8", "--data", *[f"{k}={v}" for k, v in TINY_TRIFEATURE.items()]],
                          capsys)
    bad = DS.replace(temperature=1e-39)
    assert diverged.returncode == 1, diverged.stderr
    assert (f"FAILED {bad.run_id}: loss became non-finite in epoch 1 (the run diverged; try a "
            f"lower lr, a longer-trained teacher, or a warm-up") in diverged.stderr
    assert store.is_complete(DS.replace(temperature=2.0).run_id) and not store.exists(
        store.run_path(bad.run_id, "run.json"))
