"""kdray's command lines: short ``--help`` with examples, one convention (plural flags with their
old singular spellings, ``./results`` as the store, exit status 2 and one line on bad input),
docs/cli.md as the parsers write it, and every ``KDRAY_*`` variable in kdray.environment."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdray import cli_docs
from kdray.environment import VARIABLES

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = cli_docs.commands()
MAX_HELP_LINES = 40


@pytest.mark.parametrize("command,factory", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_help_is_short_and_formatted_as_written(command, factory, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps at the terminal's width
    p = factory()
    text = p.format_help()
    assert len(text.splitlines()) <= MAX_HELP_LINES, text
    assert text.startswith(f"usage: {command} [options]\n"), text
    if "\n    python " in (p.description or ""):  # examples keep their own lines
        example = next(line for line in p.description.splitlines() if line.startswith("    python"))
        assert example in text.splitlines()


def test_the_scripts_print_that_help(tmp_path):
    """The script itself (run as ``__main__``) prints the same short help."""
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "trifeature_paper.py"), "--help"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) <= MAX_HELP_LINES, out.stdout
    assert "docs/recipes.md" in out.stdout and "stage-1" not in out.stdout
    assert "    python sweeps/trifeature_paper.py --temperatures 20 30 40" in out.stdout


def test_docs_cli_md_is_what_the_parsers_write():
    assert cli_docs.OUT.read_text() == cli_docs.markdown(), (
        "docs/cli.md is stale: run `python -m kdray.cli_docs --write`")


def test_docs_cli_md_lists_every_flag_and_variable():
    text = cli_docs.OUT.read_text()
    for command, factory in COMMANDS:
        assert f"## `{command}`" in text
        for action in factory()._actions:
            if action.help == argparse.SUPPRESS:  # a benchmark's internal flags
                continue
            for name in action.option_strings:
                assert name in ("-h", "--help") or f"`{name}" in text, (command, name)
    for name in VARIABLES:
        assert f"| `{name}` |" in text


def kdray_names_in(folders=("kdray", "sweeps", "benchmarks", "cluster")) -> dict[str, set[str]]:
    """``KDRAY_*`` name -> the files that spell it."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                for name in re.findall(r"\bKDRAY_[A-Z0-9_]+", path.read_text(errors="replace")):
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_kdray_variable_in_the_code_is_registered():
    missing = {n: sorted(f) for n, f in kdray_names_in().items() if n not in VARIABLES}
    assert not missing, f"add these to kdray/environment.py: {missing}"


def test_every_registered_variable_is_used():
    used = kdray_names_in(("kdray", "sweeps", "benchmarks", "cluster", "tests"))
    used.pop("KDRAY_", None)
    stale = [n for n in VARIABLES if not set(used.get(n, ())) - {"kdray/environment.py"}]
    assert not stale, stale


def test_the_registry_check_finds_an_unregistered_name(tmp_path, monkeypatch):
    (tmp_path / "kdray").mkdir()
    (tmp_path / "kdray" / "x.py").write_text('os.environ.get("KDRAY_NEW_THING")\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert kdray_names_in(("kdray",)) == {"KDRAY_NEW_THING": {"/".join(("kdray", "x.py"))}}


# ---- one convention ----------------------------------------------------------------------

def _parser(command: str):
    return dict(COMMANDS)[command]()


@pytest.mark.parametrize("command,old,new", [
    ("python -m kdray.trial", ["--seed", "3"], ["--seeds", "3"]),
    ("python -m kdray.trial", ["--temperature", "2", "4"], ["--temperatures", "2", "4"]),
    ("python -m kdray.trial", ["--alpha", "0.8"], ["--alphas", "0.8"]),
    ("python -m kdray.trial", ["--spec", "a.json", "b.json"], ["--specs", "a.json", "b.json"]),
    ("python benchmarks/trifeature_convergence.py", ["--seed", "1", "--alpha", "0.5"],
     ["--seeds", "1", "--alphas", "0.5"]),
    ("python benchmarks/trifeature_resolution.py", ["--seed", "2"], ["--seeds", "2"]),
])
def test_an_old_spelling_parses_as_the_plural(command, old, new):
    p = _parser(command)
    assert p.parse_args(old) == p.parse_args(new)


def test_analysis_scale_takes_space_separated_values_and_still_commas():
    p = _parser("python benchmarks/analysis_scale.py")
    spaced = p.parse_args(["--temperatures", "1", "2", "4", "--alphas", "0.6", "0.8"])
    commas = p.parse_args(["--temperatures", "1,2,4", "--alphas", "0.6,0.8"])
    flat = [[v for vs in a.temperatures for v in vs] + [v for vs in a.alphas for v in vs]
            for a in (spaced, commas)]
    assert flat[0] == flat[1] == [1.0, 2.0, 4.0, 0.6, 0.8]


@pytest.mark.parametrize("command", ["python sweeps/quick.py", "python -m kdray.trial",
                                     "python -m kdray.analysis"])
def test_the_default_store_is_results(command):
    assert _parser(command).parse_args([]).store == "./results"


def test_a_plural_flag_of_one_value_says_so(capsys):
    p = _parser("python benchmarks/trifeature_resolution.py")
    from kdray.cli_help import one_value

    with pytest.raises(SystemExit) as e:
        one_value(p, "--seeds", [0, 1])
    assert e.value.code == 2
    assert "--seeds: 0 1: one value, not 2" in capsys.readouterr().err


def _run(args, cwd):
    env = {**os.environ, "RAY_ADDRESS": "local", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_the_analysis_of_a_sweep_exits_2_on_bad_input_as_the_analysis_does(tmp_path, capsys):
    """An empty store: 2 and one line from ``python -m kdray.analysis`` and from the analysis
    at the end of a sweep (it was 1 there)."""
    from kdray.store import Store
    from kdray.sweep.cli import analyse
    from kdray.tracking import WandbConfig

    (tmp_path / "store").mkdir()
    out = _run(["-m", "kdray.analysis", "--store", str(tmp_path / "store")], tmp_path)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    capsys.readouterr()
    code = analyse(Store(str(tmp_path / "store")), 0.05, WandbConfig(mode="disabled"), cached=False)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("analysis: error: ") and "Traceback" not in err


def test_the_analysis_reads_results_by_default(tmp_path):
    out = _run(["-m", "kdray.analysis"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("analysis: error: store: ") and "results" in out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr


@pytest.mark.parametrize("flag", [["--nodes", "0"], ["--nodes", "2", "--timeout", "0"]])
def test_preflight_exits_2_on_a_bad_flag(flag, capsys):
    from kdray.sweep import preflight

    assert preflight.main(flag) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{flag[-2]}: 0" in err, err


def test_a_bad_benchmark_flag_exits_2_not_1(tmp_path):
    out = _run([str(ROOT / "benchmarks" / "cluster_scale.py"), "--trials", "0"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "--trials 0" in out.stderr and "Traceback" not in out.stderr
