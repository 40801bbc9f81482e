"""Ctrl-C stops a sweep: the stage Tune was running ends, stage 2 and the analysis do not
start, the runs it did not finish are reported interrupted (not failed), the exit status is
130, and the same command run again finishes the study."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import faults
from conftest import STABLE_LR, TINY_TRIFEATURE, child_environment
from kdray.store import Store
from kdray.sweep.driver import run_sweep
from kdray.sweep.grid import Experiment, expand
from kdray.tracking import WandbConfig

EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0, 1),
                 recipe={"epochs": 2, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
SCRIPT = f"""
    import sys
    from kdray.sweep.cli import sweep_main
    from kdray.sweep.grid import Experiment
    exp = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,),
                     (0, 1), recipe={{"epochs": 2, "batch_size": 100, "lr": {STABLE_LR}}},
                     data={TINY_TRIFEATURE!r})
    sys.exit(sweep_main([exp]))
"""


def _interrupt_when_a_trial_paused(driver: subprocess.Popen, markers) -> None:
    """Wait (bounded) until a trial has finished epoch 1 and paused there, then Ctrl-C."""
    try:
        for _ in range(6000):
            if driver.poll() is not None or list(markers.glob("*.paused")):
                break
            time.sleep(0.1)
        assert driver.poll() is None, "the driver ended before a trial paused"
        driver.send_signal(signal.SIGINT)
    finally:
        markers.mkdir(exist_ok=True)
        (markers / "release").touch()  # the paused trial goes on, so Tune can stop it


def test_ctrl_c_stops_the_sweep_and_a_rerun_finishes_it(ray_local, data_root, tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(SCRIPT))
    markers = tmp_path / "markers"
    env = child_environment(**faults.environment(f"1:{markers}:pause"), RAY_ADDRESS="local")
    driver = subprocess.Popen(
        [sys.executable, str(script), "--store", str(tmp_path / "store"), "--data-dir", data_root,
         "--wandb-mode", "disabled", "--max-concurrent", "1", "--checkpoint-every-epochs", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _interrupt_when_a_trial_paused(driver, markers)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, out
    assert "stage 2: not started (the sweep was interrupted)" in out
    assert "analysis: not run (the sweep was interrupted)" in out
    assert "INTERRUPTED:" in out and " 0 failed," in out, out
    report = run_sweep([EXP], Store(tmp_path / "store"), data_dir=data_root,
                       wandb=WandbConfig(mode="disabled"))
    assert report.ok and not report.failed, report.format()
    assert {*report.ran, *report.skipped} == {s.run_id for s in expand([EXP]).all}
