"""W&B offline runs after faults: a trial killed and retried keeps its one W&B run; a run
resumed by the next sweep continues its W&B run (same id), and leaves one offline folder
per run id for ``wandb sync`` (the earlier attempt's moved into ``wandb/superseded``)."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import faults
from conftest import STABLE_LR, TINY_TRIFEATURE, child_environment
from kdray.store import Store
from kdray.sweep.checkpoints import Cadence
from kdray.sweep.driver import run_sweep
from kdray.sweep.grid import Experiment, expand
from kdray.tracking import SUPERSEDED, WandbConfig, wandb_id
from wandb_records import offline_runs, records

pytestmark = [pytest.mark.ray, pytest.mark.trains]
EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0,),
                 recipe={"epochs": 2, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
PLAN = expand([EXP])


def offline_folders(dir: str, run_id: str) -> list[str]:
    """The offline W&B folders of ``run_id`` that ``wandb sync`` would upload."""
    return sorted(glob.glob(os.path.join(dir, "wandb", f"offline-run-*-{wandb_id(run_id)}")))


def logged_epochs(folder: str) -> list[int]:
    """The epochs a W&B offline run logged, in order."""
    (path,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".wandb")]
    out = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                     for i in r.history.item}
            if "epoch" in items:
                out.append(int(items["epoch"]))
    return out


def test_a_killed_and_retried_trial_keeps_its_wandb_run(ray_local, data_root, tmp_path,
                                                        monkeypatch):
    faults.inject(monkeypatch, f"1:{tmp_path / 'markers'}")  # each trial dies after epoch 1
    wandb = WandbConfig(mode="offline", dir=str(tmp_path / "wandb"))
    report = run_sweep([EXP], Store(tmp_path / "store"), wandb=wandb, data_dir=data_root,
                       max_failures=1, cadence=Cadence(every_epochs=1))
    assert report.ok, report.format()
    assert len(os.listdir(tmp_path / "markers")) == len(PLAN)  # every trial really was killed
    for spec in PLAN.all:
        (folder,) = offline_folders(wandb.dir, spec.run_id)
        assert logged_epochs(folder) == [1, 2], spec.run_id


def test_a_run_resumed_by_the_next_sweep_leaves_one_folder_to_sync(ray_local, data_root,
                                                                   tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    wandb = WandbConfig(mode="offline", dir=str(tmp_path / "wandb"))
    faults.inject(monkeypatch, f"1:{tmp_path / 'markers'}")
    first = run_sweep([EXP], store, wandb=wandb, data_dir=data_root, max_failures=0,
                      cadence=Cadence(every_epochs=1))
    assert set(first.failed) == {s.run_id for s in PLAN.stage1}  # killed, no retries left
    monkeypatch.delenv(faults.CRASH_ENV)
    second = run_sweep([EXP], store, wandb=wandb, data_dir=data_root)
    assert second.ok and len(second.ran) == len(PLAN), second.format()
    superseded = os.listdir(os.path.join(wandb.dir, "wandb", SUPERSEDED))
    for spec in PLAN.all:
        (folder,) = offline_folders(wandb.dir, spec.run_id)  # one to sync
        if spec.role != "ds":  # resumed from the first sweep's epoch-1 checkpoint
            assert store.read_run_json(spec.run_id)["resumed_from_epoch"] == 1
            assert logged_epochs(folder) == [2]
            assert [n for n in superseded if n.endswith(wandb_id(spec.run_id))]
        else:
            assert logged_epochs(folder) == [1, 2]


def test_a_killed_driver_leaves_one_folder_per_run_after_the_rerun(ray_local, data_root,
                                                                   tmp_path):
    """SIGKILL a sweep driver while its trials train, then sweep again: each run has one
    offline folder to sync; the killed driver's partial runs are superseded."""
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from kdray.sweep.cli import sweep_main
        from kdray.sweep.grid import Experiment
        exp = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,),
                         (0,), recipe={{"epochs": 2, "batch_size": 100, "lr": {STABLE_LR}}},
                         data={TINY_TRIFEATURE!r})
        sys.exit(sweep_main([exp]))
    """))
    markers, wandb = tmp_path / "markers", WandbConfig(mode="offline", dir=str(tmp_path / "wandb"))
    env = child_environment(**faults.environment(f"1:{markers}:pause"), RAY_ADDRESS="local")
    driver = subprocess.Popen(
        [sys.executable, str(script), "--store", str(tmp_path / "store"), "--data-dir", data_root,
         "--wandb-mode", "offline", "--wandb-dir", wandb.dir, "--no-analysis",
         "--checkpoint-every-epochs", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # wait (bounded) for a trial to finish epoch 1 and pause there, then kill the driver
        for _ in range(6000):
            if driver.poll() is not None or list(markers.glob("*.paused")):
                break
            time.sleep(0.1)
        assert driver.poll() is None, "the driver ended before a trial paused"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
        markers.mkdir(exist_ok=True)
        (markers / "release").touch()  # nothing may stay paused
    killed = {s.run_id: offline_folders(wandb.dir, s.run_id) for s in PLAN.stage1}
    assert any(killed.values())  # the killed driver left partial runs
    report = run_sweep([EXP], Store(tmp_path / "store"), wandb=wandb, data_dir=data_root)
    assert report.ok and len(report.ran) == len(PLAN), report.format()
    superseded = os.listdir(os.path.join(wandb.dir, "wandb", SUPERSEDED))
    for spec in PLAN.all:
        assert len(offline_folders(wandb.dir, spec.run_id)) == 1, spec.run_id
    assert set(offline_runs(wandb.dir)) == {s.run_id for s in PLAN.all}  # each one a W&B run
    assert sorted(superseded) == sorted(os.path.basename(f) for fs in killed.values() for f in fs)
