"""Extending a finished study through a sweep script's command line: new temperatures, then
new seeds, schedule only the new runs (the new temperatures' cohorts replay the teacher logits
the study's recorded), and the analysis picks them up with nothing else to do."""

import re

import pytest

from conftest import TINY_RECIPE, TINY_TRIFEATURE
from kdray.store import Store
from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment

pytestmark = [pytest.mark.ray, pytest.mark.trains]
STUDY = [Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (1.0,), (0.8,),
                    (0, 1), data=TINY_TRIFEATURE, recipe=TINY_RECIPE)]


def _sweep(args, capsys):
    code = sweep_main(STUDY, args)
    return code, capsys.readouterr().out


def test_extend_temperatures_then_seeds(ray_local, data_root, tmp_path, capsys):
    common = ["--store", str(tmp_path / "store"), "--data-dir", data_root, "--wandb-mode", "disabled"]
    code, out = _sweep(common, capsys)
    assert code == 0 and "sweep: 6 ran, 0 skipped" in out
    assert "| DS | 1 |" in out and "| DS | 2 |" not in out

    code, out = _sweep(common + ["--temperatures", "1", "2"], capsys)
    assert code == 0 and "sweep: 2 ran, 6 skipped" in out  # only the DS at T = 2 (2 seeds)
    assert "stage 1: 0 teacher/NDS/control runs to train" in out
    assert "| DS | 2 |" in out  # the analysis includes the new temperature
    store = Store(str(tmp_path / "store"))
    new = [r for r in store.list_run_ids() if "-ds-T2-" in r]
    assert len(new) == 2  # they ran no teacher: the study's cohorts recorded its logits
    assert all(store.read_run_json(r)["teacher_logits"].startswith("replayed from ") for r in new)

    code, out = _sweep(common + ["--temperatures", "1", "2", "--seeds", "0", "1", "2"], capsys)
    assert code == 0 and "sweep: 4 ran, 8 skipped" in out  # 1 teacher, 1 NDS, 2 DS of seed 2
    table = next(line for line in out.splitlines() if line.startswith("| Teacher |"))
    # three seeds now (one-epoch runs may be collapsed: "n = 0 of 3 (3 collapsed)")
    assert re.search(r"\| (3|n = \d of 3 \(\d collapsed\)) \|$", table.rstrip()), table

    code, out = _sweep(common + ["--temperatures", "1", "2", "--seeds", "0", "1", "2"], capsys)
    assert code == 0 and "sweep: 0 ran, 12 skipped" in out
    assert "no run changed since the last analysis" in out
