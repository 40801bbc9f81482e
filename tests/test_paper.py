"""The paper's grid: its plan (850 runs), filters and extensions, --dry-run, the cluster YAML."""

import copy
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdray.sweep.cli import Script
from kdray.sweep.grid import expand, narrow
from kdray.sweep.paper import EXPERIMENTS, high_temperature_extension
from kdray.sweep.plan import THROUGHPUT, gpu_hours
from kdray.store import Store, predictions_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_whole_grid_is_850_runs():
    plan = expand(EXPERIMENTS)
    assert len(plan) == 850
    assert (len(plan.teachers), len(plan.nds), len(plan.ds)) == (60, 60, 730)
    per_exp = Counter(plan.experiment[s.run_id] for s in plan.all)
    assert per_exp == {"table5-svhn": 55, "table5-cifar10": 55, "table5-tinyimagenet": 55,
                       "table1-cifar100-resnet": 70, "table7-cifar100-alpha0.6": 45,
                       "table1-cifar100-densenet": 70, "table1-imagenet-resnet": 70,
                       "table1-imagenet-vit": 70, "table2-celeba": 150,
                       "table2-trifeature": 150, "table3-hatexplain": 60}
    ds = Counter((s.dataset, s.teacher_arch, s.arch, s.alpha) for s in plan.ds)
    assert ds[("cifar100", "resnet56", "resnet20", 0.8)] == 12 * 5
    assert ds[("cifar100", "resnet56", "resnet20", 0.6)] == 9 * 5
    assert ds[("celeba-smiling", "resnet50", "resnet18", 0.8)] == 13 * 5
    assert ds[("hatexplain", "bert_base", "distilbert", 0.8)] == 10 * 5
    assert {s.seed for s in plan.all} == {0, 1, 2, 3, 4}
    # the alpha ablation reuses the alpha = 0.8 experiment's teachers and NDS
    assert not [s for s in plan.stage1 if plan.experiment[s.run_id] == "table7-cifar100-alpha0.6"]


def test_recipes_follow_the_paper():
    plan = expand(EXPERIMENTS)
    by = {(s.dataset, s.arch, s.role): s for s in plan.all}
    assert by[("cifar100", "resnet20", "nds")].batch_size == 128
    assert by[("imagenet", "resnet18", "nds")].batch_size == 512
    assert by[("celeba-smiling", "resnet18", "nds")].batch_size == 256
    assert by[("trifeature-shape", "lenet5", "nds")].batch_size == 64
    s = by[("cifar10", "resnet56", "teacher")]
    assert (s.epochs, s.lr, s.weight_decay, s.lr_milestones) == (100, 0.1, 1e-3, (30, 60, 90))
    assert by[("imagenet", "tiny_vit", "nds")].optimizer == "adamw"
    assert by[("hatexplain", "distilbert", "nds")].lr == 2e-5


def test_filters_and_extensions_change_the_plan_as_expected():
    only = expand(narrow(EXPERIMENTS, datasets=["cifar100"]))
    assert (len(only.teachers), len(only.nds), len(only.ds)) == (10, 10, 60 + 45 + 60)
    high = expand(narrow(EXPERIMENTS, temperatures=[20, 30, 40]))
    assert len(high.ds) == 3 * 5 * 13  # 13 (dataset, pair, alpha) blocks
    assert {s.run_id for s in high.stage1} == {s.run_id for s in expand(EXPERIMENTS).stage1}
    more = expand(narrow(EXPERIMENTS, seeds=[0, 1, 2, 3, 4, 5]))
    assert len(more) == 850 * 6 // 5
    ext = expand(high_temperature_extension(EXPERIMENTS))
    assert len(ext.ds) == 3 * 5 * 5  # svhn, cifar10, tinyimagenet, cifar100 alpha 0.6, hatexplain
    assert not ({s.run_id for s in ext.ds} & {s.run_id for s in expand(EXPERIMENTS).ds})


def test_gpu_hours_cite_their_source():
    plan = expand(EXPERIMENTS)
    assert all(t.source.startswith(("measured", "estimate")) for t in THROUGHPUT.values())
    assert {s.arch for s in plan.all} <= set(THROUGHPUT)
    imagenet_ds = next(s for s in plan.ds if s.dataset == "imagenet" and s.arch == "resnet18")
    assert 4 < gpu_hours(imagenet_ds) < 7  # docs/performance.md: ~6 GPU-hours per 100-epoch DS run


def _complete(store, spec):
    """Commit a run directly, in the store's data contract (no training)."""
    table = predictions_table(spec.run_id, spec.to_dict(), np.arange(3), np.zeros(3), np.zeros(3))
    sha = store.write_predictions(spec.run_id, table)
    store.write_run_json(spec.run_id, {"run_id": spec.run_id, "spec": spec.to_dict(),
                                       "predictions_sha256": sha})


def test_dry_run_prints_the_plan_and_writes_plan_json(tmp_path):
    store = Store(tmp_path / "store")
    done = [s for s in expand(EXPERIMENTS).stage1 if s.dataset == "cifar10"]
    for spec in done:
        _complete(store, spec)
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "full_paper.py"), "--dry-run",
                          "--store", str(tmp_path / "store"), "--plan", str(tmp_path / "plan.json")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("table5-cifar10") and " 1 " in ln)
    assert re.split(r"\s+", line)[1:5] == ["1", "10", "10", "0"]
    total = next(ln for ln in out.stdout.splitlines() if ln.startswith("total"))
    assert re.split(r"\s+", total)[1:4] == ["850", "10", "840"]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert len(plan) == 850 and {p["status"] for p in plan} == {"complete", "pending"}
    assert sum(p["status"] == "complete" for p in plan) == 10
    assert {"run_id", "status", "dataset", "role", "arch", "temperature", "alpha", "seed",
            "epochs"} <= set(plan[0])
    assert not (tmp_path / "store" / "tune").exists()  # nothing ran


def test_bad_flags_fail_before_any_work(tmp_path, capsys):
    """In process (the script's exit code in a process of its own, before Ray starts:
    test_flags.py)."""
    for args, message in [(["--temperatures", "-1"], "--temperatures: -1 is not > 0"),
                          (["--datasets", "mnist"], "--datasets: 'mnist' is not in this sweep"),
                          (["--alphas", "2"], "--alphas: 2 is not in [0, 1]"),
                          (["--resources", "resnet99=cpu:1"], "--resources: 'resnet99=cpu:1'")]:
        code = Script("sweeps/full_paper.py", EXPERIMENTS).main([*args, "--store", str(tmp_path / "s")])
        assert code == 2 and message in capsys.readouterr().err, args
        assert not (tmp_path / "s").exists()


def test_cluster_yaml_validates_against_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (ROOT / "cluster" / "aws.yaml").read_text()
    raw = yaml.safe_load(text)
    schema = json.load(open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")))
    jsonschema.validate(raw, schema)
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    nodes = config["available_node_types"]
    assert "GPU" not in nodes[config["head_node_type"]]["resources"]
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert {n["resources"]["GPU"] for n in workers} == {1, 8}  # small and multi-GPU nodes
    assert all(n["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for n in workers)
    assert all(n["node_config"]["IamInstanceProfile"] for n in nodes.values())
    assert "." in config["file_mounts"].values()
    assert any("pip install" in c and "kdray" in c for c in config["setup_commands"])
    for pattern in (r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"WANDB_API_KEY\s*=",
                    r"[0-9a-f]{40}"):
        assert not re.search(pattern, text, re.I), pattern


def test_wandb_key_from_ssm_lands_only_in_the_environment(s3_endpoint, monkeypatch, capsys):
    import boto3

    from kdray.connect import SSM_ENV, resolve_mode

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{s3_endpoint}"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.netrc
    boto3.client("ssm").put_parameter(Name="/kdray/wandb-api-key", Value="k" * 40,
                                      Type="SecureString", Overwrite=True)
    monkeypatch.setenv(SSM_ENV, "/kdray/wandb-api-key")
    assert resolve_mode(None) == "online" and os.environ["WANDB_API_KEY"] == "k" * 40
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv(SSM_ENV, "/kdray/missing")
    assert resolve_mode(None) == "offline"
    assert "no API key from SSM parameter '/kdray/missing'" in capsys.readouterr().err


def test_an_autoscaling_cluster_with_gpu_worker_types_gets_gpu_trials(ray_local, tmp_path, monkeypatch):
    from kdray.sweep.cluster import cluster_has_gpu

    monkeypatch.setenv("HOME", str(tmp_path))
    assert not cluster_has_gpu()  # the test's local Ray: CPUs only, no launcher config
    # on a head started by `ray up`, the launcher leaves its config here; no GPU node is up yet
    (tmp_path / "ray_bootstrap_config.yaml").write_text((ROOT / "cluster" / "aws.yaml").read_text())
    assert cluster_has_gpu()
