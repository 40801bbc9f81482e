"""``sweeps/full_paper.py --smoke-test`` and ``sweeps/quick.py --smoke-test``: the paper's
scripts end to end on CPU, tiny data in every dataset's real format, through the analysis."""

import subprocess
import sys
from pathlib import Path

import pytest

from kdray.sweep.paper import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.trains]


# The Trifeature experiments' path is the Trifeature and quick smoke tests' (their own scripts,
# two seeds each): this one runs every other dataset of the paper.
NOT_TRIFEATURE = sorted({d for e in EXPERIMENTS for d in e.datasets if not d.startswith("trifeature")})


def test_full_paper_smoke_test(tmp_path):
    """Every other experiment of the paper, each dataset in its real format and each pair's
    models, through the sweep and the analysis's tables, with one seed: the tests across seeds
    are the quick and Trifeature smoke tests' (two seeds each), and the analysis tests'."""
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "full_paper.py"), "--smoke-test",
                          "--seeds", "0", "--datasets", *NOT_TRIFEATURE,
                          "--store", str(tmp_path / "store"), "--wandb-mode", "disabled"],
                         capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # 10 (dataset, teacher) and 10 (dataset, student) blocks; 11 DS blocks; one seed each
    assert "sweep: 31 ran, 0 skipped (already complete), 0 failed, 0 not launched" in out.stdout
    for e in EXPERIMENTS:
        for d in set(e.datasets) & set(NOT_TRIFEATURE):
            for t, s in e.pairs:
                assert f"## {d}: {t} / {s}, alpha = {e.alphas[0]:g}" in out.stdout, (d, t, s)
    assert "Fairness of hatexplain bert_base / distilbert" in out.stdout
    assert "EOD young (%)" in out.stdout and "EOD race (%)" in out.stdout
    assert (tmp_path / "store" / "analysis" / "significance.csv").exists()


def test_quick_smoke_test(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "quick.py"), "--smoke-test",
                          "--store", str(tmp_path / "store")],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "sweep: 6 ran" in out.stdout and "W&B: offline" in out.stdout
    assert "## trifeature-shape: resnet20 / lenet5, alpha = 0.8" in out.stdout
    assert list((tmp_path / "store" / "wandb" / "wandb").glob("offline-run-*"))


def test_trifeature_paper_smoke_test(tmp_path):
    """The Trifeature reproduction's whole path: its sweep, the analysis, the paper beside it."""
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "trifeature_paper.py"),
                          "--smoke-test", "--store", str(tmp_path / "store"),
                          "--wandb-mode", "disabled"],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # shape only, unless --datasets says more: 2 teachers, 2 NDS, 2 controls, 2 DS
    assert "plan: 8 runs (2 teachers, 2 NDS, 2 controls, 2 DS)" in out.stdout
    assert "sweep: 8 ran, 0 skipped" in out.stdout
    assert "## trifeature-shape: resnet20 / lenet5, alpha = 0.8" in out.stdout
    assert "| Control | – |" in out.stdout.split("## Beside the paper")[0]  # beside the NDS
    # its DS (no T^2) share one study with the teachers and NDS: no "[kd_t_squared=...]" label;
    # the recipe line beside the paper names kd_t_squared=false, as it differs from the default
    assert "trifeature-shape [" not in out.stdout
    assert "kd_t_squared=false" in out.stdout.split("## Beside the paper")[1]
    assert "trifeature-texture" not in out.stdout.split("## Beside the paper")[0]
    assert "## Beside the paper (paper_comparison.md)" in out.stdout
    assert (tmp_path / "store" / "analysis" / "paper_comparison.md").exists()

