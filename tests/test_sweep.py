"""A real local-Ray sweep on tiny Trifeature: stage order, skipping, extending, resuming a
killed trial from its checkpoint, reporting a failing trial, W&B offline runs."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import faults
from conftest import STABLE_LR, TINY_TRIFEATURE
from kdray.sweep.grid import Experiment, expand
from kdray.store import Store
from kdray.sweep.cluster import parse_resource_overrides, resources_of
from kdray.sweep.checkpoints import Cadence
from kdray.sweep.driver import run_sweep
from kdray.tracking import WandbConfig
from wandb_records import offline_runs, summaries

pytestmark = [pytest.mark.ray, pytest.mark.trains]
EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0, 4.0), (0.8,), (0, 1),
                 recipe={"epochs": 2, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
SECRET = "sentinel-wandb-key-0123456789abcdef"


@pytest.fixture(scope="module")
def first_sweep(ray_local, data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    store, wandb_dir = Store(root / "store"), str(root / "wandb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_API_KEY", SECRET)  # a key in the environment must never land in a file
    try:
        report = run_sweep([EXP], store, wandb=WandbConfig(mode="offline", dir=wandb_dir),
                           data_dir=data_root)
    finally:
        mp.undo()
    return store, wandb_dir, report


def test_first_sweep_runs_everything_teachers_first(first_sweep):
    store, _, report = first_sweep
    plan = expand([EXP])
    assert report.ok, report.format()
    assert sorted(report.ran) == sorted(s.run_id for s in plan.all) and not report.skipped
    records = {s.run_id: store.read_run_json(s.run_id) for s in plan.all}
    for ds in plan.ds:
        teacher = records[ds.teacher_spec().run_id]
        assert records[ds.run_id]["started"] >= teacher["finished"]  # no DS before its teacher
        assert records[ds.run_id]["teacher_run_id"] == ds.teacher_spec().run_id
    assert max(r["finished"] for r in records.values() if r["spec"]["role"] != "ds") <= \
        min(r["started"] for r in records.values() if r["spec"]["role"] == "ds")


def test_second_sweep_skips_everything(first_sweep, data_root):
    store, _, _ = first_sweep
    report = run_sweep([EXP], store, data_dir=data_root)
    assert report.ran == [] and len(report.skipped) == len(expand([EXP])) and report.ok


def test_extended_grid_runs_only_the_new_runs(first_sweep, data_root):
    store, _, _ = first_sweep
    wider = EXP.replace(temperatures=(2.0, 4.0, 8.0))
    report = run_sweep([wider], store, data_dir=data_root)
    new = {s.run_id for s in expand([wider]).all} - {s.run_id for s in expand([EXP]).all}
    assert len(new) == 2 and set(report.ran) == new and report.ok
    assert all(store.read_run_json(r)["spec"]["temperature"] == 8.0 for r in new)


def test_wandb_offline_runs_are_named_grouped_and_keyless(first_sweep):
    store, wandb_dir, _ = first_sweep
    runs = offline_runs(wandb_dir)
    plan = expand([EXP])
    assert set(runs) == {s.run_id for s in plan.all}
    for spec in plan.all:
        run = runs[spec.run_id]
        assert run.run_group == "trifeature-shape/resnet20-lenet5" and run.job_type == spec.role
        assert run.project == "kdray"
        if spec.role == "ds":
            assert {f"T={spec.temperature:g}", f"alpha={spec.alpha:g}"} <= set(run.tags)
    summary = summaries(wandb_dir)
    for spec in plan.all:  # each DS run says whether its teacher ran (here: recorded)
        assert summary[spec.run_id].get("teacher_logits") == (
            "computed and recorded" if spec.role == "ds" else None), spec.run_id
    for folder in (wandb_dir, store.root):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    assert SECRET.encode() not in f.read(), os.path.join(dirpath, name)


def test_killed_trial_resumes_from_its_checkpoint(first_sweep, ray_local, data_root, tmp_path, monkeypatch):
    store, _, _ = first_sweep
    one = EXP.replace(seeds=(0,), temperatures=(2.0,))
    faults.inject(monkeypatch, f"1:{tmp_path / 'markers'}")  # each worker dies after epoch 1
    crashed = Store(tmp_path / "store")
    report = run_sweep([one], crashed, data_dir=data_root, max_failures=1,
                       cadence=Cadence(every_epochs=1))  # a resume checkpoint every epoch
    assert report.ok, report.format()
    plan = expand([one])
    assert len(os.listdir(tmp_path / "markers")) == len(plan)  # every trial really was killed
    for spec in plan.all:
        assert crashed.read_run_json(spec.run_id)["resumed_from_epoch"] == 1
        a = crashed.read_predictions(spec.run_id).column("pred").to_numpy()
        b = store.read_predictions(spec.run_id).column("pred").to_numpy()
        assert np.array_equal(a, b), spec.run_id  # same as the uninterrupted sweep


def test_rerun_resumes_what_an_earlier_sweep_left_unfinished(first_sweep, ray_local, data_root,
                                                              tmp_path, monkeypatch):
    store, _, _ = first_sweep
    one = EXP.replace(seeds=(1,), temperatures=(4.0,))
    crashed = Store(tmp_path / "store")
    faults.inject(monkeypatch, f"1:{tmp_path / 'markers'}")
    first = run_sweep([one], crashed, data_dir=data_root, max_failures=0,  # no retries left
                      cadence=Cadence(every_epochs=1))
    plan = expand([one])
    assert set(first.failed) == {s.run_id for s in plan.stage1} and len(first.not_launched) == 1
    monkeypatch.delenv(faults.CRASH_ENV)
    second = run_sweep([one], crashed, data_dir=data_root)  # e.g. after the head node died
    assert second.ok and len(second.ran) == 3
    for spec in plan.stage1:
        assert crashed.read_run_json(spec.run_id)["resumed_from_epoch"] == 1
    for spec in plan.all:
        a = crashed.read_predictions(spec.run_id).column("pred").to_numpy()
        assert np.array_equal(a, store.read_predictions(spec.run_id).column("pred").to_numpy())


def test_failing_trial_is_reported_and_the_script_exits_nonzero(ray_local, data_root, tmp_path):
    script = tmp_path / "failing_sweep.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from kdray.sweep.cli import sweep_main
        from kdray.sweep.grid import Experiment
        # pretrained=True: CIFAR ResNets have no published weights, so building the model fails
        bad = Experiment("bad", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), seeds=(0,),
                         recipe={{"epochs": 1, "pretrained": True}}, data={TINY_TRIFEATURE!r})
        sys.exit(sweep_main([bad]))
    """))
    out = subprocess.run([sys.executable, str(script), "--store", str(tmp_path / "store"),
                          "--data-dir", data_root, "--max-failures", "0", "--no-analysis",
                          "--wandb-mode", "disabled"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "2 failed, 1 not launched" in out.stdout
    assert "FAILED trifeature-shape-resnet20-teacher-s0-" in out.stdout
    assert "pretrained: resnet20 has no published weights" in out.stdout
    assert "NOT LAUNCHED trifeature-shape-lenet5-ds-T2-a0.8-s0-" in out.stdout


def test_resources_per_architecture():
    spec = expand([EXP]).teachers[0]
    assert resources_of(spec) == {"cpu": 1, "gpu": 0.25, "gpu_small": 0.25}  # a small node
    ds = expand([EXP]).ds[0]  # LeNet-5 alone asks for 1/8 GPU; with its ResNet-20 teacher, 1/4
    assert resources_of(ds) == {"cpu": 1, "gpu": 0.25, "gpu_small": 0.25}
    assert resources_of(spec, use_gpu=False) == {"cpu": 1, "gpu_small": 0.25}  # no GPU, same kind
    assert resources_of(spec, parse_resource_overrides(["resnet20=cpu:2,gpu:0.5"])) == \
        {"cpu": 2, "gpu": 0.5, "gpu_small": 0.25}
    with pytest.raises(ValueError, match="--resources: 'resnet99=cpu:1'"):
        parse_resource_overrides(["resnet99=cpu:1"])
    with pytest.raises(ValueError, match="'gpu:-1'"):
        parse_resource_overrides(["resnet20=gpu:-1"])
