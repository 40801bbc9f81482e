"""Extending a finished study through a sweep script's command line: new temperatures and new
seeds (one extension, one sweep fewer than one for each) schedule only the new runs (the new
temperatures' cohorts replay the teacher logits the study's recorded), and the analysis picks
them up with nothing else to do."""

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
    code, out = _sweep(common + ["--cuda-graph", "off"], capsys)
    assert code == 0 and "sweep: 6 ran, 0 skipped" in out
    assert "| DS | 1 |" in out and "| DS | 2 |" not in out

    # one extension with a new temperature and a new seed: the study's seeds train only their
    # DS at T = 2, replaying the logits their cohorts recorded; the new seed trains its teacher,
    # its NDS and both its DS
    code, out = _sweep(common + ["--temperatures", "1", "2", "--seeds", "0", "1", "2"], capsys)
    assert code == 0 and "sweep: 6 ran, 6 skipped" in out  # 2 DS T = 2; seed 2's 4 runs
    assert "stage 1: 2 teacher/NDS/control runs to train" in out  # seed 2's only
    assert "| DS | 2 |" in out  # the analysis includes the new temperature
    store = Store(str(tmp_path / "store"))
    replayed = [r for r in store.list_run_ids() if "-ds-T2-" in r and "-s2-" not in r]
    assert len(replayed) == 2  # they ran no teacher: the study's cohorts recorded its logits
    assert all(store.read_run_json(r)["teacher_logits"].startswith("replayed from ") for r in replayed)
    # --cuda-graph reached every trial: off in the first sweep, auto (here: no CUDA) after
    graph = {r: store.read_run_json(r)["cuda_graph"] for r in store.list_run_ids()}
    assert {g for r, g in graph.items() if "-s2-" in r or "-ds-T2-" in r} == {"not on CUDA"}, graph
    assert {g for r, g in graph.items() if "-s2-" not in r and "-ds-T2-" not in r} == {"turned off"}
    table = next(line for line in out.splitlines() if line.startswith("| Teacher |"))
    # three seeds now (one-epoch runs may be collapsed: "n = 0 of 3 (3 collapsed)")
    assert re.search(r"\| (3|n = \d of 3 \(\d collapsed\)) \|$", table.rstrip()), table

    code, out = _sweep(common + ["--temperatures", "1", "2", "--seeds", "0", "1", "2"], capsys)
    assert code == 0 and "sweep: 0 ran, 12 skipped" in out
    assert "no run changed since the last analysis" in out
