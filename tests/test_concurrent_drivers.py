"""Two sweep drivers started together on one store (a local folder, moto's S3) with
overlapping grids: every run of either grid is trained exactly once, by one of them
(kdray.lease), and their Tune experiment folders never collide."""

import re
import subprocess
import sys
import textwrap

import pyarrow.fs as pafs
import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE, child_environment
from kdray.sweep.grid import Experiment, expand
from kdray.store import Store
from wandb_records import offline_runs

pytestmark = [pytest.mark.ray, pytest.mark.trains]
EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0,),
                 recipe={"epochs": 1, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)
SEEDS = [(0, 1), (1, 2)]  # seed 1 is in both grids


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_drivers_train_every_run_once(kind, tmp_path, data_root, request):
    uri = str(tmp_path / "store") if kind == "local" else request.getfixturevalue("s3_uri")
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from kdray.sweep.cli import sweep_main
        from kdray.sweep.grid import Experiment
        exp = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,),
                         tuple(int(s) for s in sys.argv[1].split(",")),
                         recipe={{"epochs": 1, "batch_size": 100, "lr": {STABLE_LR}}},
                         data={TINY_TRIFEATURE!r})
        sys.exit(sweep_main([exp], sys.argv[2:]))
    """))
    drivers = [subprocess.Popen(
        [sys.executable, str(script), ",".join(map(str, seeds)), "--store", uri,
         "--data-dir", data_root, "--no-analysis", "--wandb-mode", "offline",
         "--wandb-dir", str(tmp_path / f"wandb{i}"), "--progress-interval", "5"],
        env=child_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, seeds in enumerate(SEEDS)]
    outs = [d.communicate(timeout=1500) for d in drivers]
    for d, (out, err) in zip(drivers, outs):
        assert d.returncode == 0, out[-3000:] + err[-3000:]
    grids = [{s.run_id for s in expand([EXP.replace(seeds=seeds)]).all} for seeds in SEEDS]
    ran = [set(re.findall(r"^  ran (\S+)$", out, re.M)) for out, _ in outs]
    assert not ran[0] & ran[1], ran  # no run trained by both
    assert ran[0] | ran[1] == grids[0] | grids[1] and ran[0] <= grids[0] and ran[1] <= grids[1]
    # each trial that trains a run starts its W&B run: one per run across both drivers
    wandb = [offline_runs(str(tmp_path / f"wandb{i}")) for i in range(2)]
    assert set(wandb[0]) == ran[0] and set(wandb[1]) == ran[1]
    store = Store(uri)
    assert all(store.is_complete(r) for r in grids[0] | grids[1])
    # Tune's experiment folders carry their driver's id: none is shared
    ids = [re.search(r"^driver (\w+):", out, re.M).group(1) for out, _ in outs]
    assert ids[0] != ids[1]
    folders = [i.base_name for i in store.fs.get_file_info(pafs.FileSelector(store.path("tune")))
               if i.type == pafs.FileType.Directory]
    assert folders and all(re.fullmatch(rf"stage[12]-\d{{8}}-\d{{6}}-({ids[0]}|{ids[1]})", f)
                           for f in folders), folders
    for i, out in enumerate(outs):
        stages = {f.split("-")[0] for f in folders if f.endswith(ids[i])}
        trained = {"stage2" if "-ds-" in r else "stage1" for r in ran[i]}
        assert stages == trained, (stages, trained)
