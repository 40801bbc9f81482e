"""A store every node can reach, or a clear error before any work, on a real Ray cluster of two
nodes (``ray.cluster_utils``, tests/multinode.py): a local ``--store`` is refused, naming the
store and the nodes and what to pass instead; ``--shared-store`` and an S3 store are
accepted; W&B's default directory follows the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import STABLE_LR
from multinode import LocalCluster

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
# refused before any work; were it not, it would train at the tests' stable learning rate
SCRIPT = f"""
import sys
from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment
exp = Experiment("one", ("digits",), (("resnet20", "lenet5"),), (2.0,), seeds=(0,),
                 recipe={{"epochs": 1, "batch_size": 64, "lr": {STABLE_LR}}},
                 data={{"image_size": 16}})
sys.exit(sweep_main([exp]))
"""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, starts_cluster):
    """A head (1 CPU) and one worker node (1 CPU, a gpu_small unit)."""
    cluster = LocalCluster(1, tmp_path_factory.mktemp("cluster"))
    try:
        cluster.add_node("gpu_small", {"CPU": 1, "gpu_small": 1})
        yield cluster
    finally:
        cluster.shutdown()


def sweep(tmp_path: Path, cluster, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    return subprocess.run([sys.executable, str(script), "--no-analysis", *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


def node_ids(cluster) -> list[str]:
    nodes = [cluster.cluster.head_node, *cluster.cluster.worker_nodes]
    return [n.node_id[:12] for n in nodes]


def test_a_local_store_is_refused_before_any_work_naming_store_nodes_and_the_way_out(
        two_nodes, tmp_path):
    store = tmp_path / "results"
    out = sweep(tmp_path, two_nodes, "--store", str(store), "--wandb-mode", "offline")
    assert out.returncode == 2, out.stdout + out.stderr
    (err,) = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert err.startswith(f"error: --store: '{store}' is a path on this machine's disk, but "
                          f"the sweep runs on a Ray cluster of more than one node (2 node(s) "
                          f"alive: "), err
    for node_id in node_ids(two_nodes):
        assert f"node {node_id}" in err, (node_id, err)
    assert "alive: " + two_nodes.ip + " (head, node " in err and ", gpu_small))" in err
    assert "Pass --store s3://BUCKET/PREFIX" in err
    assert err.endswith(f"or add --shared-store if '{store}' is on storage that every node "
                        f"mounts at that same path.")
    # W&B's default directory is the store's: refused with it
    assert f"W&B's default directory, {store}/wandb, is refused with it." in err
    # nothing started: no plan line, no stage, nothing written to the store or W&B
    assert "plan:" not in out.stdout and "stage 1" not in out.stdout
    assert not store.exists() or not any(store.iterdir())

    explicit = sweep(tmp_path, two_nodes, "--store", str(store), "--wandb-dir",
                     str(tmp_path / "wandb"))
    assert explicit.returncode == 2 and "is a path on this machine's disk" in explicit.stderr
    assert "W&B's default directory" not in explicit.stderr  # W&B writes on the driver's node


def test_shared_and_s3_stores_are_accepted_and_wandb_follows_the_store(two_nodes, tmp_path,
                                                                      s3_uri):
    """``preflight.check`` as the sweep calls it, in a driver joined to the two nodes."""
    code = textwrap.dedent(f"""
        import json
        from kdray.store import Store
        from kdray.sweep import preflight
        from kdray.sweep.options import SweepOptions
        from kdray.connect import default_dir

        out = {{}}
        for name, uri, shared in (("shared", {str(tmp_path / 'nfs')!r}, True),
                                  ("s3", {s3_uri!r}, False), ("local", {str(tmp_path / 'x')!r}, False),
                                  ("s3-shared", {s3_uri!r}, True)):
            store = Store(uri)
            try:
                preflight.check(store, SweepOptions(shared_store=shared))
                out[name] = ["ok", default_dir(store)]
            except ValueError as e:
                out[name] = ["refused", str(e)]
        print(json.dumps(out))
    """)
    env = {**os.environ, "RAY_ADDRESS": two_nodes.address}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["shared"] == ["ok", str(tmp_path / "nfs" / "wandb")]  # W&B on the shared storage
    assert out["s3"] == ["ok", str(tmp_path / "wandb")]  # ./wandb on the driver's node
    assert out["local"][0] == "refused" and "2 node(s) alive" in out["local"][1]
    assert out["s3-shared"][0] == "refused"
    assert out["s3-shared"][1].startswith("--shared-store: --store 's3://***@")  # no secret shown
    assert "is not a local path" in out["s3-shared"][1]


def test_one_machine_needs_no_shared_store(tmp_path):
    """A sweep's own local Ray (here: ``RAY_ADDRESS=local``) is one machine: a local store is
    fine, and no Ray is joined or started before the sweep starts its own."""
    code = ("from kdray.sweep import preflight; from kdray.sweep.options import SweepOptions; "
            "from kdray.store import Store; import ray; "
            f"preflight.check(Store({str(tmp_path / 'r')!r}), SweepOptions()); "
            "print(ray.is_initialized())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "RAY_ADDRESS": "local"})
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
