"""The cluster path on CPU: placement by need, the resource flag, the checkpoint cadence,
resuming a GPU checkpoint on the CPU, failing fast without CUDA, provenance, and the retry
policy (lost nodes without limit, own errors a bounded number of times)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import STABLE_LR
from kdray.trial import provenance
from kdray.sweep import runtime
from kdray.sweep.checkpoints import DEFAULT, Cadence, CheckpointClock
from kdray.training.state import load_state, restore, save_state
from kdray.sweep.cluster import parse_resource_overrides, trial_resources
from kdray.sweep.retries import LOST, OWN, UNKNOWN, RetryPolicy, failure_kind
from kdray.data import load_dataset
from kdray.sweep.grid import expand
from kdray.sweep.paper import EXPERIMENTS
from kdray.spec import RunSpec
from kdray.training.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
LARGE_ARCHS = {"resnet50", "vit_base", "tiny_vit"}  # ImageNet-size models


def aws_node_types() -> dict:
    return yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())["available_node_types"]


# ----------------------------------------------------------------------------------------
# Placement by need
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,teacher,dataset,want", [
    ("resnet20", None, "cifar10", {"cpu": 1, "gpu": 0.25, "gpu_small": 0.25}),
    ("lenet5", "resnet20", "trifeature-shape", {"cpu": 1, "gpu": 0.25, "gpu_small": 0.25}),
    ("resnet18", None, "celeba-smiling", {"cpu": 4, "gpu": 0.5, "gpu_small": 0.5}),
    ("resnet50", None, "tinyimagenet", {"cpu": 8, "gpu": 1, "gpu_large": 1}),
    ("resnet18", "resnet50", "cifar10", {"cpu": 8, "gpu": 1, "gpu_large": 1}),  # its teacher's
    ("resnet18", None, "imagenet", {"cpu": 4, "gpu": 0.5, "gpu_large": 0.5}),  # its data's
    ("tiny_vit", "vit_base", "imagenet", {"cpu": 8, "gpu": 1, "gpu_large": 1}),
    ("distilbert", "bert_base", "hatexplain", {"cpu": 2, "gpu": 0.5, "gpu_small": 0.5}),
])
def test_each_trial_asks_for_the_node_kind_it_needs(arch, teacher, dataset, want):
    assert trial_resources(arch, teacher, dataset) == want
    # without a GPU (a smoke test): the same node kind, no GPU, so it is placed as the real
    # trial would be and never given a GPU that CUDA cannot use
    cpu_only = {k: v for k, v in want.items() if k != "gpu"}
    assert trial_resources(arch, teacher, dataset, use_gpu=False) == cpu_only
    assert trial_resources(arch, teacher, dataset, use_gpu=False, max_cpus=2) == \
        {**cpu_only, "cpu": min(2, want["cpu"])}


def test_every_trial_of_the_paper_fits_only_the_node_type_of_its_kind():
    nodes = {name: t["resources"] for name, t in aws_node_types().items()}
    for spec in expand(EXPERIMENTS).all:
        res = trial_resources(spec.arch, spec.teacher_arch, spec.dataset)
        large = ({spec.arch, spec.teacher_arch} & LARGE_ARCHS) or spec.dataset == "imagenet"
        kind = "gpu_large" if large else "gpu_small"
        assert res[kind] == res["gpu"] and not ({"gpu_small", "gpu_large"} - {kind}) & set(res)
        fits = [name for name, r in nodes.items()
                if all(r.get({"cpu": "CPU", "gpu": "GPU"}.get(k, k), 0) >= v for k, v in res.items())]
        assert fits == [kind], (spec.run_id, res, fits)  # the node type named after the kind
        per_gpu = round(1 / res["gpu"])
        if not large:
            assert per_gpu >= 2 or spec.arch in {"resnet18"}, spec.run_id  # CIFAR-size: packed


def test_overrides_of_the_resource_flag():
    o = parse_resource_overrides(["resnet20=gpu:0.5", "resnet50=cpu:4,gpu:1,gpu_large:0",
                                  "lenet5=gpu:0,gpu_small:0.25", "resnet56=gpu_large:1",
                                  "densenet121=cpu:2,gpu:1,my_nvme:1"])
    assert trial_resources("resnet20", overrides=o) == {"cpu": 1, "gpu": 0.5, "gpu_small": 0.25}
    assert trial_resources("resnet50", overrides=o) == {"cpu": 4, "gpu": 1}  # kind dropped
    assert trial_resources("lenet5", overrides=o) == {"cpu": 1, "gpu_small": 0.25}  # kind, no GPU
    assert trial_resources("resnet56", overrides=o) == {"cpu": 1, "gpu": 0.25, "gpu_large": 1}
    assert trial_resources("densenet121", overrides=o) == \
        {"cpu": 2, "gpu": 1, "gpu_small": 0.25, "my_nvme": 1}
    # gpu:0 keeps the kind a DS trial's teacher needs (how the CPU cluster tests place trials)
    assert trial_resources("resnet18", "resnet50", "cifar10",
                           parse_resource_overrides(["resnet18=cpu:1,gpu:0"])) == \
        {"cpu": 1, "gpu_large": 1}
    assert trial_resources("resnet50", overrides=parse_resource_overrides(
        ["resnet50=gpu_large:0,gpu_small:1"])) == {"cpu": 8, "gpu": 1, "gpu_small": 1}
    for item, message in [("resnet99=cpu:1", "--resources: 'resnet99=cpu:1' is not ARCH="),
                          ("resnet20=gpu:-1", "'gpu:-1' in 'resnet20=gpu:-1' is not cpu:N"),
                          ("resnet20=gpu_large:1.5", "an amount above 1 of gpu_large must be a whole number"),
                          ("resnet20=cpu:inf", "'cpu:inf'"), ("resnet20=no such:1", "'no such:1'"),
                          ("resnet20=cpu:1,cpu:2", "'cpu' appears twice"), ("resnet20=", "is not ARCH=")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            parse_resource_overrides([item])


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------
def test_checkpoint_cadence_every_n_epochs_or_m_minutes():
    assert (DEFAULT.every_epochs, DEFAULT.every_minutes) == (10, 15.0)
    now = [0.0]
    clock = CheckpointClock(Cadence(every_epochs=3, every_minutes=2), start_epoch=0, now=lambda: now[0])
    due = []
    for epoch, seconds in [(1, 10), (2, 20), (3, 30), (4, 40), (5, 200), (6, 210), (7, 215)]:
        now[0] = seconds
        if clock.due(epoch, final_epoch=7):
            clock.saved(epoch)
            due.append(epoch)
    assert due == [3, 5, 7]  # epoch 3 by count, epoch 5 by time (170 s > 2 min), and the last
    resumed = CheckpointClock(Cadence(every_epochs=3), start_epoch=5)
    assert not resumed.due(7) and resumed.due(8)  # counted from the epoch it resumed at
    for kwargs, flag in [({"every_epochs": 0}, "--checkpoint-every-epochs: 0"),
                         ({"every_epochs": 1.5}, "--checkpoint-every-epochs: 1.5"),
                         ({"every_minutes": 0}, "--checkpoint-every-minutes: 0"),
                         ({"every_minutes": float("inf")}, "--checkpoint-every-minutes: inf")]:
        with pytest.raises(ValueError, match=flag):
            Cadence(**kwargs)


def _tag_storages_as_cuda():
    """Make ``torch.save`` record every storage as ``cuda:0``: a checkpoint written on a GPU
    node, produced on this CPU machine (returns the undo)."""
    entry = (1, lambda storage: "cuda:0", lambda obj, location: None)
    torch.serialization._package_registry.append(entry)
    torch.serialization._package_registry.sort(key=lambda e: e[0])
    return lambda: torch.serialization._package_registry.remove(entry)


@pytest.mark.trains
def test_a_gpu_checkpoint_resumes_on_the_cpu_and_the_loaded_copy_is_dropped(tmp_path):
    digits = load_dataset("digits", {"image_size": 16})
    spec = RunSpec(dataset="digits", role="teacher", arch="lenet5", epochs=2, batch_size=64,
                   data={"image_size": 16}, lr=STABLE_LR)
    full = Trainer(spec, digits, device="cpu")
    while full.epoch < 2:
        full.train_epoch()
    first = Trainer(spec, digits, device="cpu")
    first.train_epoch()
    undo = _tag_storages_as_cuda()
    try:
        path = save_state(first.state_dict(), tmp_path)
    finally:
        undo()
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does here
        torch.load(path, weights_only=False)
    state = load_state(path)
    model = state["students"][spec.run_id]["model"]
    assert all(t.device.type == "cpu" for t in model.values())
    torch.manual_seed(999)  # a fresh process: the RNG comes from the checkpoint
    resumed = Trainer(spec, digits, device="cpu")
    assert restore(resumed, state) == 1 and state == {}  # loaded, then dropped
    while resumed.epoch < 2:
        resumed.train_epoch()
    assert np.array_equal(resumed.predict()[0], full.predict()[0])  # = the undisturbed run
    assert load_state(Path(path).read_bytes())["epoch"] == 1  # bytes (a store object) too


# ----------------------------------------------------------------------------------------
# Fail fast without CUDA; what a trial says about its node and device
# ----------------------------------------------------------------------------------------
def test_a_gpu_without_usable_cuda_fails_at_once_naming_node_devices_and_build(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    node = {"node_id": "ab" * 28, "node_type": "gpu_small", "node_ip": "10.0.0.7",
            "hostname": "ip-10-0-0-7"}
    with pytest.raises(runtime.CudaUnavailableError) as e:
        runtime.require_cuda(["3"], node)
    msg = str(e.value)
    for part in ("GPU 3", "node abababababab (gpu_small, 10.0.0.7, host ip-10-0-0-7)",
                 "CUDA_VISIBLE_DEVICES='3'", f"torch {torch.__version__}",
                 "torch.cuda.is_available() is False"):
        assert part in msg, (part, msg)
    assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in msg
    runtime.require_cuda([], node)  # a CPU trial: nothing to check
    report = runtime.device_report([])
    assert report["device"].startswith("cpu") and report["torch_cuda"] == torch.version.cuda


@pytest.mark.ray
def test_a_trial_given_a_logical_gpu_fails_at_once_and_its_first_report_names_node_and_device(
        tmp_path):
    """A real sweep on a Ray whose one GPU is logical (Ray assigns it, CUDA is not here): the
    trial reports its node and device, then fails before training, saying why."""
    script = tmp_path / "gpu_sweep.py"
    script.write_text(textwrap.dedent("""
        import sys
        import ray
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
        from kdray.sweep.cli import sweep_main
        from kdray.sweep.grid import Experiment
        exp = Experiment("gpu", ("digits",), (("resnet20", "lenet5"),), (2.0,), seeds=(0,),
                         recipe={"epochs": 1, "batch_size": 64}, data={"image_size": 16})
        sys.exit(sweep_main([exp]))
    """))
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, str(script), "--store", str(store), "--no-analysis",
                          "--wandb-mode", "disabled", "--max-failures", "0"],
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-4000:]
    assert "2 failed, 1 not launched" in out.stdout, text[-4000:]
    failed = [ln for ln in out.stdout.splitlines() if ln.startswith("  FAILED digits-resnet20-teacher")]
    assert len(failed) == 1, out.stdout
    for part in ("CudaUnavailableError", "Ray gave this trial GPU 0 on node ",
                 "CUDA_VISIBLE_DEVICES='0'", "torch.cuda.is_available() is False",
                 f"torch {torch.__version__}"):
        assert part in failed[0], (part, failed[0])
    rows = [json.loads(line) for path in sorted(store.glob("tune/stage1-*/*/result.json"))
            for line in path.read_text().splitlines()]
    first = [r for r in rows if "node/node_id" in r]
    assert first and all(r["device/gpu_ids"] == ["0"] and r["device/cuda_visible_devices"] == "0"
                         and r["device"].startswith("cpu") for r in first)
    assert not any("students" in r for r in rows)  # no epoch was trained
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_code_version_from_env_git_or_the_git_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(provenance.COMMIT_ENV, "0123456789abcdef0123456789abcdef01234567")
    assert provenance.code_version(tmp_path).endswith("+0123456789ab")
    monkeypatch.delenv(provenance.COMMIT_ENV)
    assert provenance.code_version(tmp_path) == provenance.code_version.__globals__["kdray"].__version__
    # a node without a git binary, the checkout's .git synced by the cluster launcher
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no git")))
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (tmp_path / "repo" / "pkg").mkdir()
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    assert provenance.code_version(tmp_path / "repo" / "pkg").endswith("+" + "a" * 12)
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs\n{'b' * 40} refs/heads/main\n")
    assert provenance.code_version(tmp_path / "repo" / "pkg").endswith("+" + "b" * 12)
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached
    assert provenance.code_version(tmp_path / "repo" / "pkg").endswith("+" + "c" * 12)


def test_the_cluster_config_syncs_the_git_folder_for_provenance():
    raw = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    assert not any(".git" in pattern for pattern in raw.get("rsync_exclude", []))


# ----------------------------------------------------------------------------------------
# cluster/aws.yaml: what `ray up` needs (checked offline, as Ray validates it)
# ----------------------------------------------------------------------------------------
MIN_DRIVER = {"13.0": 580, "12.8": 570, "12.6": 560}  # NVIDIA's minimum driver per CUDA build


def test_cluster_config_permissions_image_and_per_node_type_setup():
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    import jsonschema

    raw = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    jsonschema.validate(raw, json.load(open(Path(ray.autoscaler.__file__).parent / "ray-schema.json")))
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    types_ = config["available_node_types"]
    head = types_[config["head_node_type"]]

    # permissions: the head profile's policy lets Ray's autoscaler run workers with theirs
    assert head["node_config"]["IamInstanceProfile"] == {"Name": "kdray-head"}
    workers = {n: t for n, t in types_.items() if n != config["head_node_type"]}
    assert all(t["node_config"]["IamInstanceProfile"] == {"Name": "kdray-worker"} for t in workers.values())
    head_policy = json.loads((ROOT / "cluster" / "iam" / "kdray-head-policy.json").read_text())
    worker_policy = json.loads((ROOT / "cluster" / "iam" / "kdray-worker-policy.json").read_text())

    def allowed(policy):
        out = {}
        for st in policy["Statement"]:
            for action in [st["Action"]] if isinstance(st["Action"], str) else st["Action"]:
                out.setdefault(action, []).append(st["Resource"])
        return out

    head_allowed, worker_allowed = allowed(head_policy), allowed(worker_policy)
    for action in ("ec2:RunInstances", "ec2:DescribeInstances", "ec2:CreateTags",
                   "ec2:TerminateInstances"):
        assert head_allowed[action] == ["*"], action
    assert head_allowed["iam:PassRole"] == ["arn:aws:iam::ACCOUNT_ID:role/kdray-worker"]  # the role
    for allowed_ in (head_allowed, worker_allowed):  # the store, read and written by every node
        assert allowed_["s3:ListBucket"] == ["arn:aws:s3:::YOUR-BUCKET"]
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert allowed_[action] == ["arn:aws:s3:::YOUR-BUCKET/*"]
        assert "ecr:BatchGetImage" in allowed_ and "ecr:GetAuthorizationToken" in allowed_
    assert "iam:PassRole" not in worker_allowed and "ec2:RunInstances" not in worker_allowed

    # one pinned GPU image (a Deep Learning AMI id, not Ray's default); its driver is
    # checked on each GPU host against the minimum of the torch CUDA build the image pins
    images = {t["node_config"]["ImageId"] for t in types_.values()}
    assert len(images) == 1 and images.pop().startswith("ami-")
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    torch_pin = dict(line.split()[1].split("=") for line in dockerfile.splitlines()
                     if line.startswith("ARG "))
    assert torch_pin["TORCH"] == torch.__version__.split("+")[0] and torch_pin["CUDA"] == "cu130"
    assert "download.pytorch.org/whl/${CUDA}" in dockerfile
    cuda = "13.0"
    tag = f"torch{torch_pin['TORCH']}-{torch_pin['CUDA']}"
    assert raw["docker"]["image"] == f"kdray-deps:{tag}" and not raw["docker"]["pull_before_run"]
    assert f"TAG=deps-{tag}" in (ROOT / "cluster" / "build_image.sh").read_text()
    for name, t in workers.items():
        init = " ".join(t["initialization_commands"])
        assert f"kdray:deps-{tag}" in init, name  # pulled from ECR, not installed
        assert f"-ge {MIN_DRIVER[cuda]}" in init, name
        # the data folder on the instance's local NVMe (the DLAMI mounts it there)
        assert t["docker"]["worker_run_options"] == ["-v /opt/dlami/nvme/kdray-data:/home/ray/data"]
        assert ("imagenet" in init) == (name == "gpu_large"), name  # ImageNet only where it runs
        assert t["worker_setup_commands"] == ["pip install --quiet --no-deps --no-build-isolation "
                                              "-e /home/ray/src/kdray"]  # nothing downloaded
        kind = {"gpu_small", "gpu_large"} & set(t["resources"])
        assert kind == {name} and t["resources"][name] == t["resources"]["GPU"]
    assert "imagenet" not in " ".join(config["initialization_commands"])  # not on the head


# ----------------------------------------------------------------------------------------
# Retries
# ----------------------------------------------------------------------------------------
def _errors():
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

    node_died = ActorDiedError()
    node_died.error_msg = ("The actor died unexpectedly before finishing this task.\nThe actor "
                           "died because its node has died. Node Id: " + "f" * 56)
    process_died = ActorDiedError()
    process_died.error_msg = ("The actor died unexpectedly before finishing this task.\nThe "
                              "actor is dead because its worker process has died.")
    unreachable = ActorUnavailableError("RpcError: Socket closed", None)
    own = RayTaskError("train", "Traceback ...\nValueError: bad", ValueError("bad"))
    return node_died, process_died, unreachable, own


def test_failures_are_told_apart():
    node_died, process_died, unreachable, own = _errors()
    assert failure_kind(node_died) == LOST
    assert failure_kind(process_died) == OWN
    assert failure_kind(unreachable) == UNKNOWN
    assert failure_kind(own) == OWN and failure_kind(ValueError("x")) == OWN


def test_lost_nodes_retry_forever_own_errors_a_bounded_number_of_times(monkeypatch):
    node_died, process_died, unreachable, own = _errors()
    alive = {"n1", "n2"}
    monkeypatch.setattr("kdray.sweep.retries._alive_nodes", lambda: set(alive))
    lines = []
    policy = RetryPolicy(max_failures=2, node_grace_s=30, log=lines.append, name=lambda t: t.trial_id)
    trial = types.SimpleNamespace(trial_id="t1", max_failures=-1)
    for _ in range(25):  # a long spot run: many preemptions, never given up
        policy.failed(trial, node_died, "ActorDiedError: node")
    policy.callback.on_trial_result(0, [], trial, {"node/node_id": "n1"})
    alive.discard("n1")
    policy.failed(trial, unreachable, "ActorUnavailableError: gone")  # its node is gone: lost
    assert policy.lost["t1"] == 26 and trial.max_failures == -1 and not policy.gave_up
    policy.failed(trial, own, "ValueError: bad")
    policy.failed(trial, process_died, "ActorDiedError: process")
    assert trial.max_failures == -1 and not policy.stopper("t1", {})  # 2 retries used
    policy.callback.on_trial_result(0, [], trial, {"node/node_id": "n2"})
    policy.failed(trial, unreachable, "ActorUnavailableError: gone")  # n2 is alive: pending
    since = policy._pending["t1"][2]
    policy.resolve(now=since + 20)
    assert not policy.gave_up
    policy.resolve(now=since + 31)  # still alive past the grace: its own error, the third one
    assert "failed 3 times by its own error" in policy.gave_up["t1"]
    assert "ActorUnavailableError: gone" in policy.gave_up["t1"]
    assert trial.max_failures == 0 and policy.stopper("t1", {}) and not policy.stopper("t2", {})
    assert sum("lost with its node" in ln for ln in lines) == 26
    assert lines[-1].startswith("  t1: failed by its own error 3 times; not retried again")


@pytest.mark.ray
def test_retry_policy_under_tune_stops_after_the_own_error_budget(ray_local, tmp_path):
    from ray import tune

    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def train(config):
        tune.report({"node/node_id": "x"})  # the first report, as kdray's trainable does
        n = len(list(attempts.iterdir()))
        (attempts / str(n)).touch()
        raise ValueError(f"attempt {n} failed")

    policy = RetryPolicy(max_failures=1)
    results = tune.Tuner(
        tune.with_resources(train, {"cpu": 1}),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0,
                                  callbacks=[policy.callback], stop=policy.stopper,
                                  failure_config=tune.FailureConfig(max_failures=-1))).fit()
    result = results[0]
    assert len(list(attempts.iterdir())) == 2  # the first attempt and one retry
    assert policy.gave_up[result.metrics["trial_id"]].startswith("ValueError: attempt 1 failed")
