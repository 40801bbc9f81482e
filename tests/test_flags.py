"""Every bad flag of the sweep scripts and of ``python -m kdray.trial`` is refused before any
work: exit code 2, a message naming the flag and the value, and Ray never started."""

import subprocess
import sys
from pathlib import Path

import pytest

from kdray import trial
from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment

ROOT = Path(__file__).resolve().parents[1]
EXP = Experiment("flags", ("trifeature-shape",), (("resnet20", "lenet5"),), (1.0, 2.0), (0.8,), (0, 1),
                 recipe={"epochs": 2}, data={"image_size": 16, "per_combination": 2,
                                             "test_per_combination": 1})

# (argv, what the message must contain)
BAD_SWEEP_FLAGS = [
    (["--epochs", "0"], "--epochs: 0 is not an integer >= 1"),
    (["--epochs", "-3"], "--epochs: -3 is not an integer >= 1"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    (["--temperatures"], "argument --temperatures: expected at least one argument"),
    (["--temperatures", "-1"], "--temperatures: -1 is not > 0"),
    (["--temperatures", "0"], "--temperatures: 0 is not > 0"),
    (["--temperatures", "nan"], "--temperatures: nan is not > 0"),
    (["--temperatures", "inf"], "--temperatures: inf is not > 0"),
    (["--temperatures", "hot"], "argument --temperatures: invalid float value: 'hot'"),
    (["--temperatures", "2", "2"], "--temperatures: 2 appears twice"),
    (["--alphas"], "argument --alphas: expected at least one argument"),
    (["--alphas", "1.5"], "--alphas: 1.5 is not in [0, 1]"),
    (["--alphas", "-0.1"], "--alphas: -0.1 is not in [0, 1]"),
    (["--alphas", "nan"], "--alphas: nan is not in [0, 1]"),
    (["--seeds"], "argument --seeds: expected at least one argument"),
    (["--seeds", "-1"], "--seeds: -1 is not an integer >= 0"),
    (["--seeds", "x"], "argument --seeds: invalid int value: 'x'"),
    (["--seeds", "0", "0"], "--seeds: 0 appears twice"),
    (["--datasets"], "argument --datasets: expected at least one argument"),
    (["--datasets", "mnist"], "--datasets: 'mnist' is not in this sweep"),
    (["--datasets", ""], "--datasets: '' is not a dataset name"),
    (["--max-failures", "-1"], "--max-failures: -1 is not an integer >= 0"),
    (["--max-failures", "many"], "argument --max-failures: invalid int value: 'many'"),
    (["--max-concurrent", "0"], "--max-concurrent: 0 is not an integer >= 1"),
    (["--level", "0"], "--level: 0 is not in (0, 1)"),
    (["--level", "1.5"], "--level: 1.5 is not in (0, 1)"),
    (["--level", "nan"], "--level: nan is not in (0, 1)"),
    (["--store", ""], "--store: '' is not a local path or s3://bucket/prefix"),
    (["--plan", ""], "--plan: '' is not a file path"),
    (["--data-dir", ""], "--data-dir: '' is not a directory"),
    (["--wandb-dir", ""], "--wandb-dir: '' is not a directory"),
    (["--wandb-project", " "], "--wandb-project: ' ' is not a W&B project name"),
    (["--wandb-mode", "loud"], "argument --wandb-mode: invalid choice: 'loud'"),
    (["--resources"], "argument --resources: expected at least one argument"),
    (["--resources", "resnet99=cpu:1"], "--resources: 'resnet99=cpu:1'"),
    (["--resources", "resnet20=cpu:-1"], "--resources: 'cpu:-1'"),
    (["--cohort-size"], "argument --cohort-size: expected at least one argument"),
    (["--cohort-size", "0"], "--cohort-size: '0'"),
    (["--progress-interval", "0"], "--progress-interval: 0 is not > 0"),
    (["--progress-interval", "-5"], "--progress-interval: -5 is not > 0"),
    (["--progress-interval", "soon"], "argument --progress-interval: invalid float value: 'soon'"),
]


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray (or a sweep) fails the test."""
    import ray

    import kdray.sweep.driver

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(kdray.sweep.driver, "run_plan", refuse)


def exit_code(fn, argv) -> int:
    try:
        return fn(argv)
    except SystemExit as e:  # argparse's own errors (missing or non-numeric values)
        return e.code


@pytest.mark.parametrize("argv,message", BAD_SWEEP_FLAGS, ids=[" ".join(a) or "''" for a, _ in BAD_SWEEP_FLAGS])
def test_bad_sweep_flag(argv, message, no_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = exit_code(lambda a: sweep_main([EXP], a), ["--store", str(tmp_path / "store"), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert not (tmp_path / "store").exists()  # nothing was written either


def test_bad_progress_interval_from_the_environment(no_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDRAY_PROGRESS_INTERVAL", "-2")
    assert sweep_main([EXP], ["--store", str(tmp_path / "store")]) == 2
    assert "$KDRAY_PROGRESS_INTERVAL: '-2' is not > 0" in capsys.readouterr().err


def test_bad_teacher_logits_limit_from_the_environment(no_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDRAY_TEACHER_LOGITS_MB", "2GB")
    assert sweep_main([EXP], ["--store", str(tmp_path / "store")]) == 2
    assert "$KDRAY_TEACHER_LOGITS_MB: '2GB' is not an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_good_flags_reach_the_plan(no_ray, tmp_path, capsys):
    """The checks refuse only bad values: --epochs 1 (not 0) is applied, in a dry run."""
    plan = tmp_path / "plan.json"
    code = sweep_main([EXP], ["--store", str(tmp_path / "store"), "--dry-run", "--plan", str(plan),
                              "--epochs", "1", "--temperatures", "4", "--seeds", "3",
                              "--progress-interval", "0.5"])
    assert code == 0, capsys.readouterr().err
    import json

    runs = json.loads(plan.read_text())
    assert runs and all(r["epochs"] == 1 and r["seed"] == 3 for r in runs)


def test_sweep_script_exits_2_before_ray_starts(tmp_path):
    """As a user runs it: the real script in a subprocess, no Ray started, nothing trained."""
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "quick.py"), "--store",
                          str(tmp_path / "store"), "--epochs", "0"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: --epochs: 0 is not an integer >= 1" in out.stderr
    assert "Ray" not in out.stdout + out.stderr and "ray:" not in out.stdout
    assert not (tmp_path / "store").exists()


BAD_TRIAL_FLAGS = [
    (["--epochs", "0"], "--epochs: 0 is not an integer >= 1"),
    (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["--seed", "-1"], "--seeds: -1 is not an integer >= 0"),
    (["--seeds", "0", "1"], "--seeds: 0 1: one seed per command"),
    (["--temperature", "-1"], "--temperatures: -1.0 is not > 0"),
    (["--temperatures"], "argument --temperatures/--temperature: expected at least one argument"),
    (["--alpha", "2"], "--alphas: 2.0 is not in [0, 1]"),
    (["--batch-size", "0"], "--batch-size: 0 is not an integer >= 1"),
    (["--lr", "0"], "--lr: 0.0 is not > 0"),
    (["--lr", "-0.1"], "--lr: -0.1 is not > 0"),
    (["--lr", "inf"], "--lr: inf is not > 0"),
    (["--data"], "--data: no value; expected at least one KEY=VALUE"),
    (["--data", "image_size"], "--data: 'image_size' is not KEY=VALUE"),
    (["--dataset", "mnist"], "--dataset: 'mnist' is not one of"),
    (["--arch", "resnet99"], "--arch: 'resnet99' is not one of"),
    (["--device", "gpu0"], "--device: 'gpu0' is not a torch device"),
    (["--spec", "missing.json"], "--specs: 'missing.json' is not a JSON file"),
    (["--store", ""], "--store: '' is not a local path or s3://bucket/prefix"),
]


@pytest.mark.parametrize("argv,message", BAD_TRIAL_FLAGS, ids=[" ".join(a) for a, _ in BAD_TRIAL_FLAGS])
def test_bad_trial_flag(argv, message, no_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trial, "run_cohort", refuse, raising=False)
    monkeypatch.setattr(trial, "run", refuse)
    base = ["--store", str(tmp_path / "store"), "--dataset", "digits", "--role", "nds",
            "--arch", "lenet5", "--wandb-mode", "disabled"]
    code = exit_code(trial.main, base + argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert not (tmp_path / "store").exists()
