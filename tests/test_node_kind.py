"""A host's node kind from its GPUs (``python -m kdray.sweep.node_kind``), and the launcher
configs' start commands that use it, run in bash as Ray runs them.

``nvidia-smi`` is a stand-in on PATH printing each GPU's memory in MiB, as
``--query-gpu=memory.total --format=csv,noheader,nounits`` does; ``ray`` is a stand-in that
records its arguments. The GPU sizes are stand-in values, not measured on any card.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GB = 10**9
# the GPUs of cluster/aws.yaml's instance types, as AWS lists them (count, GB each)
AWS_GPUS = {"g5.2xlarge": (1, 24), "p4d.24xlarge": (8, 40)}


def mib(gb: float) -> int:
    """Whole MiB of ``gb`` decimal gigabytes, rounded up (what a card of that size reports)."""
    return -(-int(gb * GB) // 2**20)


def fake_bin(tmp_path: Path, gpus_mib: list[int] | None, *, fail: str | None = None) -> Path:
    """A folder with a stand-in ``nvidia-smi`` (none when ``gpus_mib`` is None and no
    ``fail``) and a ``ray`` that writes its arguments, one per line, to ``ray.args``."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    smi = bin_ / "nvidia-smi"
    if fail is not None:
        smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{fail}\nEOF\nexit 9\n")
    elif gpus_mib is not None:
        lines = "".join(f"{m}\\n" for m in gpus_mib)
        smi.write_text(f'#!/bin/sh\n[ "$*" = "--query-gpu=memory.total --format=csv,noheader,'
                       f'nounits" ] || exit 2\nprintf "{lines}"\n')
    if smi.exists():
        smi.chmod(0o755)
    ray = bin_ / "ray"
    ray.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/ray.args\n')
    ray.chmod(0o755)
    return bin_


def run(cmd: list[str], bin_: Path, **env: str) -> subprocess.CompletedProcess:
    path = f"{bin_}:{os.path.dirname(sys.executable)}:/usr/bin:/bin"  # no real nvidia-smi
    base = {k: v for k, v in os.environ.items()
            if k not in ("RAY_OVERRIDE_RESOURCES", "CUDA_VISIBLE_DEVICES")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**base, "PATH": path, "PYTHONPATH": str(ROOT), **env})


def node_kind(bin_: Path, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "kdray.sweep.node_kind"], bin_, **env)


@pytest.mark.parametrize("gpus,flags", [
    ([mib(40)] * 8, '--num-gpus=8 --resources={"gpu_large":8}'),
    ([mib(24)], '--num-gpus=1 --resources={"gpu_small":1}'),
    ([mib(80), mib(24)], '--num-gpus=2 --resources={"gpu_small":2}'),  # not every GPU is large
    ([38147], '--num-gpus=1 --resources={"gpu_large":1}'),  # 38,147 MiB >= 40 GB
    ([38146], '--num-gpus=1 --resources={"gpu_small":1}'),  # 38,146 MiB < 40 GB
    ([], "--num-gpus=0"),  # nvidia-smi lists no GPU
    (None, "--num-gpus=0"),  # no nvidia-smi: a CPU host
])
def test_the_kind_follows_the_memory_of_every_gpu(tmp_path, gpus, flags):
    out = node_kind(fake_bin(tmp_path, gpus))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == flags
    assert f"{len(gpus or [])} GPU(s)" in out.stderr


def test_the_flags_are_exactly_the_arguments_ray_start_gets(tmp_path):
    bin_ = fake_bin(tmp_path, [mib(40)] * 8)
    out = run(["bash", "-c", f"FLAGS=$({sys.executable} -m kdray.sweep.node_kind) && "
                             f"ray start --head $FLAGS"], bin_)
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "ray.args").read_text().splitlines()
    assert args == ["start", "--head", "--num-gpus=8", '--resources={"gpu_large":8}']
    assert json.loads(args[-1].split("=", 1)[1]) == {"gpu_large": 8}


@pytest.mark.parametrize("fail,gpus,message", [
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver", None,
     "failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate"),
    (None, ["[N/A]"], "printed '[N/A]'; expected each GPU's memory in MiB"),
])
def test_unreadable_gpus_stop_the_node_with_the_reason(tmp_path, fail, gpus, message):
    out = node_kind(fake_bin(tmp_path, gpus, fail=fail))
    assert out.returncode == 1 and out.stdout == ""
    assert "nvidia-smi --query-gpu=memory.total" in out.stderr and message in out.stderr


def test_a_declared_node_type_must_match_its_hardware(tmp_path):
    bin_ = fake_bin(tmp_path, [mib(24)])
    ok = node_kind(bin_, RAY_OVERRIDE_RESOURCES='{"CPU": 8, "GPU": 1, "gpu_small": 1}')
    assert ok.returncode == 0 and ok.stdout.strip() == '--num-gpus=1 --resources={"gpu_small":1}'
    bad = node_kind(bin_, RAY_OVERRIDE_RESOURCES='{"CPU": 8, "GPU": 1, "gpu_large": 1}')
    assert bad.returncode == 1 and bad.stdout == ""
    assert ("declares GPU: 1, gpu_large: 1 ($RAY_OVERRIDE_RESOURCES, from the cluster config's "
            "available_node_types) but its hardware gives GPU: 1, gpu_small: 1") in bad.stderr
    (tmp_path / "cpu").mkdir()  # a head type declaring no GPU, on a host without one
    head = node_kind(fake_bin(tmp_path / "cpu", None), RAY_OVERRIDE_RESOURCES='{"CPU": 8}')
    assert head.returncode == 0 and head.stdout.strip() == "--num-gpus=0"


def fake_bin_ids(tmp_path: Path, gpus: list[tuple[int, str, int]]) -> Path:
    """A stand-in ``nvidia-smi`` answering the index/UUID query with ``gpus`` (index, UUID,
    MiB): every GPU of the machine, as nvidia-smi lists them whatever
    ``$CUDA_VISIBLE_DEVICES`` says."""
    bin_ = fake_bin(tmp_path, None)
    lines = "".join(f"{i}, {uuid}, {m}\\n" for i, uuid, m in gpus)
    (bin_ / "nvidia-smi").write_text(
        f'#!/bin/sh\n[ "$*" = "--query-gpu=index,uuid,memory.total --format=csv,noheader,'
        f'nounits" ] || exit 2\nprintf "{lines}"\n')
    (bin_ / "nvidia-smi").chmod(0o755)
    return bin_


# a machine of four GPUs, two 24 GB-class and two 80 GB-class (stand-in sizes)
MIXED = [(0, "GPU-aa11", mib(24)), (1, "GPU-bb22", mib(24)), (2, "GPU-cc33", mib(80)),
         (3, "GPU-dd44", mib(80))]


@pytest.mark.parametrize("visible,gpus,flags", [
    ("2,3", MIXED, '--num-gpus=2 --resources={"gpu_large":2}'),  # SLURM gave 2 and 3
    ("1,2", MIXED, '--num-gpus=2 --resources={"gpu_small":2}'),
    ("GPU-cc33", MIXED, '--num-gpus=1 --resources={"gpu_large":1}'),  # a UUID's prefix
    ("GPU-dd", MIXED, '--num-gpus=1 --resources={"gpu_large":1}'),
    ("", MIXED, "--num-gpus=0"),  # none for this job
    ("NoDevFiles", MIXED, "--num-gpus=0"),
    # a device cgroup shows nvidia-smi the job's GPUs alone, numbered from 0
    ("2,3", MIXED[2:], '--num-gpus=2 --resources={"gpu_large":2}'),
])
def test_only_the_gpus_cuda_visible_devices_lists_count(tmp_path, visible, gpus, flags):
    out = node_kind(fake_bin_ids(tmp_path, gpus), CUDA_VISIBLE_DEVICES=visible)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == flags


def test_a_listed_gpu_that_nvidia_smi_does_not_list_stops_the_node(tmp_path):
    out = node_kind(fake_bin_ids(tmp_path, MIXED[:2]), CUDA_VISIBLE_DEVICES="5")
    assert out.returncode == 1 and out.stdout == ""
    assert ("$CUDA_VISIBLE_DEVICES='5' lists GPU(s) ['5'] but nvidia-smi lists "
            "['0 (GPU-aa11)', '1 (GPU-bb22)']") in out.stderr


def _commands(config: str, key: str) -> list[str]:
    return yaml.safe_load((ROOT / "cluster" / config).read_text())[key]


@pytest.mark.parametrize("name,resources", [
    (n, t["resources"]) for n, t in
    yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())["available_node_types"].items()
    if t["resources"].get("GPU")])
def test_aws_worker_start_declares_what_the_rule_gives_each_gpu_node_type(tmp_path, name,
                                                                          resources):
    raw = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    count, gb = AWS_GPUS[raw["available_node_types"][name]["node_config"]["InstanceType"]]
    bin_ = fake_bin(tmp_path, [mib(gb)] * count)
    start = _commands("aws.yaml", "worker_start_ray_commands")
    assert start[0] == "ray stop" and "$(python -m kdray.sweep.node_kind)" in start[1]
    out = run(["bash", "-c", start[1]], bin_, RAY_HEAD_IP="10.0.0.1",
              RAY_OVERRIDE_RESOURCES=json.dumps(resources))
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "ray.args").read_text().splitlines()
    assert args[:3] == ["start", "--address=10.0.0.1:6379", "--object-manager-port=8076"]
    assert args[3:] == [f"--num-gpus={resources['GPU']}",
                        "--resources=" + json.dumps({name: resources[name]}, separators=(",", ":"))]
    # the same node type on the other kind's GPUs: Ray does not start
    (tmp_path / "ray.args").unlink()
    other = fake_bin(tmp_path, [mib(64 - gb)] * count)
    wrong = run(["bash", "-c", start[1]], other, RAY_HEAD_IP="10.0.0.1",
                RAY_OVERRIDE_RESOURCES=json.dumps(resources))
    assert wrong.returncode == 1 and not (tmp_path / "ray.args").exists()
    assert "kdray.sweep.node_kind: error: this node's type declares" in wrong.stderr


@pytest.mark.parametrize("key,gpus,want", [
    ("head_start_ray_commands", None, ["--num-gpus=0"]),
    ("worker_start_ray_commands", [mib(24)] * 4, ["--num-gpus=4", '--resources={"gpu_small":4}']),
    ("worker_start_ray_commands", [mib(80)] * 2, ["--num-gpus=2", '--resources={"gpu_large":2}']),
])
def test_onprem_start_commands_declare_each_machines_kind(tmp_path, key, gpus, want):
    start = _commands("onprem.yaml", key)
    assert "$(python -m kdray.sweep.node_kind)" in start[-1]
    assert start[-1].rstrip().endswith("$FLAGS")
    out = run(["bash", "-c", start[-1]], fake_bin(tmp_path, gpus), RAY_HEAD_IP="10.0.0.1")
    assert out.returncode == 0, out.stderr
    args = (tmp_path / "ray.args").read_text().splitlines()
    assert args[0] == "start" and args[-len(want):] == want
