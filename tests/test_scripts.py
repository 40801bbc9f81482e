"""Every sweep script runs the way ``ray submit`` runs it: a copy of the script alone, in a
folder of its own (``ray submit`` rsyncs only the script, to the head's home, and runs
``python ~/<script> ARGS`` from there), from any working directory; kdray itself comes from
the installed project, never from files beside the script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "sweeps").glob("*.py"))


def alone(tmp_path: Path, script: Path) -> Path:
    """A copy of ``script`` alone in an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    return Path(shutil.copy(script, home / script.name))


def run(script: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_each_sweep_script_runs_alone_as_ray_submit_runs_it(tmp_path, script):
    copy = alone(tmp_path, script)
    out = run(copy, copy.parent, "--dry-run")  # from the folder it was copied to
    assert out.returncode == 0, out.stderr[-3000:]
    assert "plan: " in out.stdout and " runs written to plan.json" in out.stdout
    assert sorted(p.name for p in copy.parent.iterdir()) == sorted([script.name, "plan.json"])


def test_a_script_alone_runs_from_any_working_directory(tmp_path):
    """Relative paths (``--store``, ``--plan``) are the working directory's, not the script's."""
    copy = alone(tmp_path, ROOT / "sweeps" / "quick.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run(copy, elsewhere, "--dry-run", "--store", "results")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (elsewhere / "plan.json").exists() and not (copy.parent / "results").exists()


def test_no_launcher_config_mounts_the_project_beside_the_script(tmp_path):
    """``ray submit`` runs the script from the home folder, and Ray workers get the driver's
    path: a folder named ``kdray`` there (a project mounted at ~/kdray) is imported as an
    empty namespace package ahead of the installed one (its submodules still load through
    the editable install, but ``kdray.__file__`` and ``kdray.__version__``, which
    ``kdray.trial.provenance.code_version`` reads for every run.json, are gone), as this
    shows; so neither config mounts the project there. Both configs install the project
    editable (``pip install -e``), where this happens; a regular install (as CI's) is a
    regular package on the path, which wins over a namespace folder; the probe tells which it has."""
    home = tmp_path / "home"
    (home / "kdray").mkdir(parents=True)  # what a mount at ~/kdray puts beside the script
    (home / "probe.py").write_text(
        "import importlib.machinery, sys\n"
        "regular = importlib.machinery.PathFinder.find_spec('kdray', sys.path[1:])\n"
        "import kdray.sweep.cli, kdray\n"
        "print(kdray.__file__, hasattr(kdray, '__version__'), bool(regular and regular.origin))\n")
    out = run(home / "probe.py", home)
    assert out.returncode == 0, out.stderr
    *seen, regular = out.stdout.split()
    assert seen[1] == regular and (seen[0] == "None") == (regular == "False"), seen
    for config, home in (("aws.yaml", "/home/ray"), ("onprem.yaml", "~")):
        mounts = yaml.safe_load((ROOT / "cluster" / config).read_text())["file_mounts"]
        (target,) = [t for t, src in mounts.items() if src == "."]
        assert not (str(Path(target).parent) == home and Path(target).name in {"kdray", "analysis"})
