"""The sweep on real multi-node Ray clusters of this machine, as `ray submit` runs it.

The node types are cluster/aws.yaml's (same names, logical GPUs and node-kind resources,
CPU counts scaled down), the store is a moto S3 server, and the sweep script runs in its own
process that joins the running cluster by address. Each trial asks for the node kind its
architecture needs, with ``gpu:0`` (this machine has no CUDA, and a trial given a GPU
without CUDA fails at once by design, see test_cluster.py).

1. every trial ran on the node type its request names, and run.json says which node;
2. small trials shared one GPU node at the same time (each pauses after epoch 1 until the
   test releases it, so the overlap is observed, not timed);
3. the autoscaling cluster started its worker nodes from zero, by demand;
4. a worker node killed mid-trial (every one of its processes, SIGKILL) loses nothing: its
   trials resume on the other node from their epoch-1 checkpoint on S3, end with the
   predictions of an undisturbed run, and the store holds each run once. The retry budget
   for the trials' own errors is 0 here: a lost node does not count against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from kdray import trial as kdtrial
from kdray.sweep.cluster import LAUNCHER_CONFIG_ENV, parse_resource_overrides, trial_resources
from kdray.data import write_tiny
from kdray.sweep.grid import Experiment, expand
from kdray.store import MODEL, PREDICTIONS, RUN_JSON, Store
import faults
from multinode import LocalCluster, aws_node_types, fake_autoscaling_config, kill_node

pytestmark = [pytest.mark.ray, pytest.mark.trains]
CPUS = {"head": 1, "gpu_small": 2, "gpu_large": 2}  # scaled down from 8 / 8 / 96
RECIPE = {"epochs": 2, "batch_size": 16}
SMALL = Experiment("small", ("cifar10",), (("resnet56", "resnet20"),), (2.0,), (0.8,), (0, 1),
                   recipe=RECIPE)
LARGE = Experiment("large", ("cifar10",), (("resnet50", "resnet18"),), (2.0,), (0.8,), (0,),
                   recipe=RECIPE)
RESOURCES = [f"{a}=cpu:1,gpu:0" for a in ("resnet56", "resnet20", "resnet50", "resnet18")]
SCRIPT = """
import sys
from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment
exps = [Experiment(*args, recipe=recipe) for args, recipe in {exps!r}]
sys.exit(sweep_main(exps))
"""


def kind_of(spec) -> str:
    res = trial_resources(spec.arch, spec.teacher_arch if spec.role == "ds" else None,
                          spec.dataset, parse_resource_overrides(RESOURCES))
    (kind,) = {"gpu_small", "gpu_large"} & set(res)
    return kind


def start_sweep(tmp_path: Path, experiments, store_uri: str, env: dict, *extra: str):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT.format(exps=[((e.name, e.datasets, e.pairs, e.temperatures,
                                            e.alphas, e.seeds), dict(e.recipe)) for e in experiments]))
    log = tmp_path / "driver.log"
    cmd = [sys.executable, str(script), "--store", store_uri, "--no-analysis", "--wandb-mode",
           "disabled", "--max-failures", "0", "--resources", *RESOURCES, *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    return proc, log


def wait_for(condition, proc, log: Path, timeout: float = 600):
    """Poll ``condition()`` (bounded) until it returns something truthy; fail if the driver
    exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the sweep driver exited ({proc.returncode}) first:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"timed out:\n{log.read_text()[-4000:]}")


def finish(proc, log: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep did not finish in {timeout}s:\n{log.read_text()[-4000:]}")
    out = log.read_text()
    assert proc.returncode == 0, out[-6000:]
    return out


def assert_store_holds_each_run_once(store: Store, plan) -> dict:
    assert sorted(store.list_run_ids()) == sorted(s.run_id for s in plan.all)
    records = {}
    for spec in plan.all:
        assert store.is_complete(spec.run_id), spec.run_id
        files = sorted(i.base_name for i in store.fs.get_file_info(
            pafs.FileSelector(store.run_path(spec.run_id))))
        assert files == sorted([MODEL, PREDICTIONS, RUN_JSON]), (spec.run_id, files)
        df = store.read_predictions(spec.run_id).to_pandas()
        assert df.sample_index.tolist() == list(range(len(df))) and len(df) == 10
        records[spec.run_id] = store.read_run_json(spec.run_id)
    return records


@pytest.fixture
def aws_like_cluster(tmp_path, starts_cluster):
    """head + 2 gpu_small + 1 gpu_large, each worker node with its own data folder."""
    types_ = aws_node_types(CPUS)
    cluster = LocalCluster(CPUS["head"], tmp_path)
    nodes = {}
    try:
        for name, count in (("gpu_small", 2), ("gpu_large", 1)):
            for i in range(count):
                node = cluster.add_node(name, types_[name]["resources"],
                                        env={"KDRAY_DATA_DIR": str(tmp_path / f"data-{name}-{i}")})
                nodes[node.node_id] = (name, node)
        yield cluster, nodes
    finally:
        cluster.shutdown()


def test_placement_sharing_and_a_killed_node_on_a_multi_node_cluster(aws_like_cluster, s3_uri,
                                                                    tmp_path):
    cluster, nodes = aws_like_cluster
    driver_data = tmp_path / "driver-data"  # the head's copy of the dataset, staged from here
    write_tiny("cifar10", driver_data)
    markers = tmp_path / "markers"
    proc, log = start_sweep(tmp_path, [SMALL, LARGE], s3_uri,
                            {"RAY_ADDRESS": cluster.address, "KDRAY_DATA_DIR": str(driver_data),
                             **faults.environment(f"1:{markers}:pause")},
                            "--checkpoint-every-epochs", "1")
    plan = expand([SMALL, LARGE])
    small_stage1 = [s for s in plan.stage1 if kind_of(s) == "gpu_small"]
    assert len(small_stage1) == 5  # more than the 2 small nodes x 2 CPUs hold at once

    def paused_on_small():
        found = {}
        for path in markers.glob("*.paused") if markers.exists() else []:
            info = json.loads(path.read_text())
            if info.get("node_type") == "gpu_small":
                found[path.name.removesuffix(".paused")] = info
        return found if len(found) == 4 else None

    paused = wait_for(paused_on_small, proc, log)
    by_node = {}
    for run_id, info in paused.items():
        by_node.setdefault(info["node_id"], []).append(run_id)
    # (2) both small nodes hold two trials each, paused at once: they share the node's GPU
    assert sorted(len(v) for v in by_node.values()) == [2, 2]
    assert {nodes[n][0] for n in by_node} == {"gpu_small"}

    # (4) a spot reclaim: every process of one small node dies, mid-trial
    victim_id = sorted(by_node)[0]
    lost = sorted(by_node[victim_id])
    kill_node(nodes[victim_id][1])
    cluster.cluster.remove_node(nodes[victim_id][1], allow_graceful=False)
    (markers / "release").touch()
    out = finish(proc, log)
    assert "FAILED" not in out and "NOT LAUNCHED" not in out
    for run_id in lost:  # each counted as a lost node (retried), not as its own error
        assert f"  {run_id}: lost with its node (1 so far), retried" in out, out[-4000:]
    assert "by its own error" not in out

    store = Store(s3_uri)
    records = assert_store_holds_each_run_once(store, plan)
    # (1) every trial ran on the node type its request names; run.json says which node
    for spec in plan.all:
        node = records[spec.run_id]["node"]
        assert node["node_type"] == node["node_kind"] == kind_of(spec), spec.run_id
        assert nodes[node["node_id"]][0] == kind_of(spec)
    for run_id in lost:  # resumed elsewhere from the epoch-1 checkpoint (on S3)
        assert records[run_id]["resumed_from_epoch"] == 1
        assert records[run_id]["node"]["node_id"] not in (victim_id,)
    for run_id in set(paused) - set(lost):
        assert records[run_id]["resumed_from_epoch"] == 0

    # ... and each ends with the predictions of an undisturbed run of the same spec
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial (one CPU); restored: later tests' numerics need it
    by_id = {s.run_id: s for s in plan.all}
    for run_id in lost:
        try:
            undisturbed = kdtrial.run(by_id[run_id], Store(tmp_path / "undisturbed"),
                                      device="cpu", data_root=driver_data, num_workers=0)
        finally:
            torch.set_num_threads(threads)
        assert undisturbed["resumed_from_epoch"] == 0
        got = store.read_predictions(run_id).column("pred").to_numpy()
        want = Store(tmp_path / "undisturbed").read_predictions(run_id).column("pred").to_numpy()
        assert np.array_equal(got, want), run_id

    # the dataset came from the store: each worker node's data folder holds the driver's files
    assert store.exists(store.path("datasets", "cifar10.json"))
    batch = Path("cifar10", "cifar-10-batches-py", "data_batch_1")
    used = {records[r]["node"]["node_id"] for r in records}
    for node_id in used:
        name, node = nodes[node_id]
        index = sorted(n for n, (t, _) in nodes.items() if t == name).index(node_id)
        copy = tmp_path / f"data-{name}-{index}" / batch
        assert copy.read_bytes() == (driver_data / batch).read_bytes(), node_id


def test_autoscaling_cluster_starts_its_worker_nodes_from_zero(s3_uri, tmp_path, monkeypatch,
                                                               starts_cluster):
    types_ = aws_node_types(CPUS)
    workers = {n: dict(t, max_workers=1) for n, t in types_.items() if not t["head"]}
    config = fake_autoscaling_config(dict(types_["head"]["resources"]), workers)
    monkeypatch.setenv("KDRAY_DATA_DIR", str(tmp_path / "nodes-data"))  # what launched nodes get
    cluster = LocalCluster(CPUS["head"], tmp_path, autoscaling_config=config)
    try:
        before = [n for n in cluster.cluster.global_state.node_table() if n["Alive"]]
        assert len(before) == 1  # the head alone
        driver_data = tmp_path / "driver-data"
        write_tiny("cifar10", driver_data)
        one = LARGE.replace(recipe={"epochs": 1, "batch_size": 16})
        proc, log = start_sweep(tmp_path, [one], s3_uri,
                                {"RAY_ADDRESS": cluster.address,
                                 "KDRAY_DATA_DIR": str(driver_data),
                                 LAUNCHER_CONFIG_ENV: str(cluster.config_path)})
        finish(proc, log)
        started = {n["NodeID"]: n for n in cluster.cluster.global_state.node_table()
                   if n["NodeID"] != before[0]["NodeID"]}
        plan = expand([one])
        records = assert_store_holds_each_run_once(Store(s3_uri), plan)
        kinds = set()
        for spec in plan.all:
            node = records[spec.run_id]["node"]
            assert node["node_id"] in started, spec.run_id  # on a node started for it
            assert node["node_type"] == node["node_kind"] == kind_of(spec), spec.run_id
            kinds.add(node["node_type"])
        assert kinds == {"gpu_small", "gpu_large"}  # each type launched by demand, from zero
    finally:
        cluster.shutdown()
