"""Where a Ray trial runs and on what; and the check that stops a trial at once when it would
otherwise train for days on the wrong thing.

- :func:`node_info` names the Ray node a trial runs on: node id, IP, host, the node type the
  launcher started it as (``$RAY_NODE_TYPE_NAME`` where the launcher sets it) and its *kind*,
  the custom resource (``gpu_small``, ``gpu_large``) that placement by need uses.
- :func:`require_cuda` raises :class:`CudaUnavailableError` when Ray gave the trial a GPU but
  CUDA is not usable in its process (a driver too old for the torch CUDA build, a container
  started without the NVIDIA runtime, a CPU-only torch). The message names the node,
  ``CUDA_VISIBLE_DEVICES`` and the torch build, so the broken node type can be fixed instead
  of a trial training on one CPU thread for days.
- :func:`trial_report` is what a trial reports first (and what its run.json records): node,
  device, the GPUs Ray assigned, ``CUDA_VISIBLE_DEVICES`` and the torch build.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from kdray.trial.provenance import this_host
from kdray.sweep.cluster import node_kind_of


class CudaUnavailableError(RuntimeError):
    """Ray assigned a GPU to this trial but CUDA cannot be used in its process."""


# ----------------------------------------------------------------------------------------
# The node
# ----------------------------------------------------------------------------------------
def node_info() -> dict[str, Any]:
    """The Ray node this process runs on (outside Ray: the host only)."""
    info: dict[str, Any] = this_host()
    try:
        import ray

        if not ray.is_initialized():
            return info
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray
        return info
    info["node_id"] = node_id
    info["node_type"] = os.environ.get("RAY_NODE_TYPE_NAME")  # set by Ray's node launchers
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            resources = node.get("Resources", {})
            info["node_ip"] = node.get("NodeManagerAddress")
            info["node_kind"] = node_kind_of(resources)
            info["node_gpus"] = int(resources.get("GPU", 0))
            break
    return info


def node_name(info: dict[str, Any]) -> str:
    """``node <id> (<type or kind>, <ip>, host <hostname>)`` for messages."""
    parts = [p for p in (info.get("node_type") or info.get("node_kind"), info.get("node_ip"),
                         f"host {info.get('hostname')}") if p]
    node = info.get("node_id")
    return (f"node {node[:12]}" if node else "this machine") + f" ({', '.join(parts)})"


# ----------------------------------------------------------------------------------------
# The device
# ----------------------------------------------------------------------------------------
def assigned_gpus() -> list[str]:
    """The GPU ids Ray assigned to this trial ([] outside Ray or for a CPU trial)."""
    try:
        import ray

        return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    except Exception:  # noqa: BLE001
        return []


def torch_build() -> str:
    """``torch <version> (CUDA <build>)`` or ``(CPU-only build)``."""
    import torch

    cuda = torch.version.cuda
    return f"torch {torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU-only build'})"


def require_cuda(gpus: list[str] | None = None, node: dict[str, Any] | None = None) -> None:
    """Raise :class:`CudaUnavailableError` if Ray gave this trial GPUs (``gpus``, default
    :func:`assigned_gpus`) and ``torch.cuda.is_available()`` is False. Nothing to check for a
    CPU trial."""
    import torch

    gpus = assigned_gpus() if gpus is None else gpus
    if not gpus or torch.cuda.is_available():
        return
    node = node_info() if node is None else node
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.version.cuda is None:
        why = "this torch is a CPU-only build; install the CUDA build the cluster image pins"
    else:
        why = (f"the NVIDIA driver on the node is missing or older than torch's CUDA "
               f"{torch.version.cuda} needs (check `nvidia-smi` on the node and the AMI in "
               f"cluster/aws.yaml), or the container was started without the NVIDIA runtime")
    raise CudaUnavailableError(
        f"Ray gave this trial GPU {', '.join(gpus)} on {node_name(node)} with "
        f"CUDA_VISIBLE_DEVICES={visible!r}, but CUDA is not usable there: "
        f"torch.cuda.is_available() is False for {torch_build()}. Likely cause: {why}. "
        f"Failing now instead of training on the CPU.")


def device_report(gpus: list[str] | None = None) -> dict[str, Any]:
    """The device a trial trains on: ``cuda:0 (<GPU name>)`` when Ray gave it a GPU and CUDA
    works, else ``cpu``; with the GPU ids, ``CUDA_VISIBLE_DEVICES`` and the torch build."""
    import torch

    gpus = assigned_gpus() if gpus is None else gpus
    if gpus and torch.cuda.is_available():
        device = f"cuda:0 ({torch.cuda.get_device_name(0)})"
    else:
        device = f"cpu ({platform.processor() or platform.machine()})"
    return {"device": device, "gpu_ids": gpus,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda}


def trial_report() -> dict[str, Any]:
    """A trial's first report: its node and its device (``node/...``, ``device/...`` keys;
    flat, so Tune and W&B show them as columns)."""
    node, device = node_info(), device_report()
    return {**{f"node/{k}": v for k, v in node.items()},
            **{f"device/{k}": v for k, v in device.items() if k != "device"},
            "device": device["device"]}
