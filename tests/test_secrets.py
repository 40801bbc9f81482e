"""The W&B API key reaches no file and no log: a sweep script runs with a sentinel key in its
environment, HOME and TMPDIR inside one folder (so every file the run writes lands there:
the store, W&B's folders, the Ray session directory of its cluster with every Ray log), and
the key must appear in none of them, nor in what the script printed."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE, child_environment
from wandb_records import offline_runs

SECRET = "sentinel-wandb-key-0123456789abcdef"


@pytest.mark.ray
@pytest.mark.trains
def test_the_wandb_key_reaches_no_file_and_no_log(data_root):
    root = Path(tempfile.mkdtemp(prefix="kdk", dir="/tmp"))  # short: Ray's socket paths
    try:
        (root / "home").mkdir()
        (root / "tmp").mkdir()
        script = root / "sweep.py"
        script.write_text(textwrap.dedent(f"""
            import sys
            from kdray.sweep.cli import sweep_main
            from kdray.sweep.grid import Experiment
            exp = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,),
                             (0.8,), (0,), recipe={{"epochs": 1, "batch_size": 100, "lr": {STABLE_LR}}},
                             data={TINY_TRIFEATURE!r})
            sys.exit(sweep_main([exp]))
        """))
        env = child_environment(HOME=str(root / "home"), TMPDIR=str(root / "tmp"),
                                RAY_TMPDIR=str(root / "tmp"),  # over the test process's own
                                WANDB_API_KEY=SECRET, WANDB_MODE="offline", RAY_ADDRESS="local")
        out = subprocess.run([sys.executable, str(script), "--store", str(root / "store"),
                              "--data-dir", data_root, "--progress-interval", "1"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        sessions = list((root / "tmp" / "ray").glob("session_2*"))
        assert sessions and list(sessions[0].glob("logs/*")), "the Ray session is not in TMPDIR"
        assert SECRET not in out.stdout + out.stderr
        searched = 0
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue  # sockets, fifos
                with open(path, "rb") as f:
                    assert SECRET.encode() not in f.read(), path
                searched += 1
        assert searched > 50  # the store, W&B's runs and logs, Ray's logs
        # the analysis's W&B run is where the sweep's runs are, not in the working directory
        runs = offline_runs(str(root / "store" / "wandb"))
        assert [r.job_type for r in runs.values()].count("analysis") == 1 and len(runs) == 4
        assert not (root / "wandb").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
