"""A host's node kind, from the GPUs it has: the ``ray start`` flags that declare it.

``python -m kdray.sweep.node_kind`` prints, for the host it runs on, the flags that give its
Ray node its GPUs and its kind, e.g. ``--num-gpus=8 --resources={"gpu_large":8}``, and says on
stderr what it found. Both launcher configs and the SLURM job start Ray on a node with them::

    FLAGS=$(python -m kdray.sweep.node_kind) && ray start ... $FLAGS

The flags contain no space and no quote, so ``$FLAGS`` splits into exactly these arguments;
the command fails (and so the ``ray start`` after ``&&`` does not run) when the GPUs cannot be
read or contradict what the node's type declares.

The rule, one for every cluster (``cluster/onprem.yaml``, ``cluster/aws.yaml``,
``cluster/slurm.sbatch``):

- the GPUs are the lines of ``nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits``,
  one per GPU, its memory in MiB (nvidia-smi(1)); a host without ``nvidia-smi`` has none.
  ``nvidia-smi`` failing is an error: a GPU host whose driver is broken must not join as a
  CPU host;
- where ``$CUDA_VISIBLE_DEVICES`` is set (a SLURM job step's: the GPUs SLURM gave the job on
  that machine, ``cluster/slurm.sbatch``), only the GPUs it lists, by index or UUID, from
  ``nvidia-smi --query-gpu=index,uuid,memory.total ...``; nvidia-smi ignores the variable and
  lists every GPU of the machine, and Ray refuses to start with more GPUs than it lists.
  Where a device cgroup shows nvidia-smi the job's GPUs alone (as many as listed, numbered
  otherwise), those are the GPUs;
- ``gpu_large`` when **every** GPU has at least 40 GB (40 * 10**9 bytes, i.e. 38,147 MiB or
  more), else ``gpu_small``; as many units of the kind as GPUs. 40 GB is the smallest GPU of
  ``cluster/aws.yaml``'s large node type (p4d.24xlarge, A100 40 GB), where the ImageNet-size
  models (ResNet-50, ViT-B, TinyViT and the DS runs they teach) are placed; a host mixing
  GPUs below and above it is ``gpu_small``;
- no GPU: ``--num-gpus=0`` and no kind (a head or a CPU host: it runs no GPU trial).

Each architecture's request in the table of ``kdray/sweep/cluster.py`` names the kind it
needs (``kdray.sweep.cluster.trial_resources``), so this rule decides where every trial may
run.

Ray's autoscaler must know a node type's resources before the node exists, so
``cluster/aws.yaml`` also declares them (``available_node_types``), and Ray starts each node
with ``$RAY_OVERRIDE_RESOURCES`` set to them, which wins over flags. There the command checks
that the declared GPUs and kind are the ones this rule gives the hardware, and fails, naming
both, when they are not (a node type edited to claim ``gpu_large`` on a 24 GB GPU). Ray's
``local`` provider (``cluster/onprem.yaml``) declares nothing: the flags decide.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Mapping, Sequence

from kdray.sweep.cluster import NODE_KINDS

LARGE_GPU_BYTES = 40 * 10**9  # gpu_large: every GPU has at least this much memory
QUERY = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
QUERY_IDS = ["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"]
DECLARED_ENV = "RAY_OVERRIDE_RESOURCES"  # what Ray's autoscaler declares for the node type
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"  # the GPUs this process may use (a SLURM job's)


class NodeKindError(RuntimeError):
    """The host's GPUs cannot be read, or contradict its node type's declared resources."""


def gpu_memory_mib() -> list[int]:
    """Each GPU's memory in MiB, from ``nvidia-smi`` ([] when it is not installed); only
    those ``$CUDA_VISIBLE_DEVICES`` lists when it is set (:func:`visible_memory`)."""
    if shutil.which(QUERY[0]) is None:
        return []
    visible = os.environ.get(VISIBLE_ENV)
    if visible is None:
        return [_mib(row[0], row, QUERY) for row in _nvidia_smi(QUERY)]
    return visible_memory(_nvidia_smi(QUERY_IDS), visible)


def visible_memory(rows: Sequence[Sequence[str]], visible: str) -> list[int]:
    """The memory in MiB of the GPUs that ``visible`` (``$CUDA_VISIBLE_DEVICES``: indices or
    UUIDs, comma-separated; empty or SLURM's ``NoDevFiles`` for none) lists, from nvidia-smi's
    ``rows`` of (index, uuid, memory). All rows when no listed id matches but the counts
    agree (a device cgroup shows nvidia-smi the job's GPUs alone, numbered from 0)."""
    wanted = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "NoDevFiles"]
    for row in rows:
        if len(row) != 3:
            raise NodeKindError(f"`{' '.join(QUERY_IDS)}` printed {', '.join(row)!r}; expected "
                                f"each GPU's index, UUID and memory in MiB")

    def match(gpu: str) -> Sequence[str] | None:
        return next((r for r in rows if gpu == r[0] or (gpu.startswith(("GPU-", "MIG-"))
                                                        and r[1].startswith(gpu))), None)

    found = [match(gpu) for gpu in wanted]
    if None in found:
        if len(rows) != len(wanted):
            raise NodeKindError(
                f"${VISIBLE_ENV}={visible!r} lists GPU(s) {wanted} but nvidia-smi lists "
                f"{[f'{r[0]} ({r[1]})' for r in rows]}: expected indices or UUIDs of these")
        found = list(rows)
    return [_mib(row[2], row, QUERY_IDS) for row in found]


def _nvidia_smi(query: list[str]) -> list[list[str]]:
    """nvidia-smi's CSV lines for ``query``, split into their fields."""
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NodeKindError(f"`{' '.join(query)}` could not run: {e}") from None
    if out.returncode != 0:
        said = (out.stderr or out.stdout).strip()[:500]
        raise NodeKindError(f"`{' '.join(query)}` failed (exit {out.returncode}): {said}; "
                            f"fix the NVIDIA driver on this host before Ray starts on it")
    return [[f.strip() for f in line.split(",")] for line in out.stdout.splitlines()
            if line.strip()]


def _mib(value: str, row: Sequence[str], query: list[str]) -> int:
    try:
        return int(value)
    except ValueError:
        raise NodeKindError(f"`{' '.join(query)}` printed {', '.join(row)!r}; expected each "
                            f"GPU's memory in MiB, a whole number") from None


def resources(memory_mib: Sequence[int]) -> dict[str, int]:
    """``{"GPU": n, KIND: n}`` for GPUs of these sizes (``{"GPU": 0}`` for none)."""
    if not memory_mib:
        return {"GPU": 0}
    large = all(m * 2**20 >= LARGE_GPU_BYTES for m in memory_mib)
    return {"GPU": len(memory_mib), "gpu_large" if large else "gpu_small": len(memory_mib)}


def ray_start_flags(found: Mapping[str, int]) -> str:
    """``--num-gpus=N`` and, with GPUs, ``--resources={"KIND":N}`` (no spaces, no quotes)."""
    kinds = {k: v for k, v in found.items() if k != "GPU"}
    flags = [f"--num-gpus={found.get('GPU', 0)}"]
    if kinds:
        flags.append("--resources=" + json.dumps(kinds, separators=(",", ":")))
    return " ".join(flags)


def check_declared(found: Mapping[str, int], declared_json: str | None) -> None:
    """Raise :class:`NodeKindError` if the node type's declared resources (JSON, Ray's
    ``$RAY_OVERRIDE_RESOURCES``) give it other GPUs or another kind than ``found``."""
    if not declared_json:
        return
    try:
        declared = json.loads(declared_json)
    except ValueError:
        raise NodeKindError(f"${DECLARED_ENV}: {declared_json!r} is not JSON") from None
    want = {k: int(declared.get(k, 0)) for k in ("GPU", *NODE_KINDS)}
    have = {k: int(found.get(k, 0)) for k in ("GPU", *NODE_KINDS)}
    if want != have:
        raise NodeKindError(
            f"this node's type declares {_plain(want)} (${DECLARED_ENV}, from the cluster "
            f"config's available_node_types) but its hardware gives {_plain(have)} (gpu_large "
            f"when every GPU has at least 40 GB, else gpu_small; kdray/sweep/node_kind.py): "
            f"fix the node type's resources or its instance type")


def _plain(res: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in res.items() if v or k == "GPU")


def parser():
    from kdray.cli_help import command_parser

    return command_parser("python -m kdray.sweep.node_kind", __doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser().parse_args(argv)
    try:
        memory = gpu_memory_mib()
        found = resources(memory)
        check_declared(found, os.environ.get(DECLARED_ENV))
    except NodeKindError as e:
        print(f"kdray.sweep.node_kind: error: {e}", file=sys.stderr)
        return 1
    kind = next((k for k in NODE_KINDS if found.get(k)), "no kind")
    print(f"kdray.sweep.node_kind: {len(memory)} GPU(s) {memory} MiB: {kind}", file=sys.stderr)
    print(ray_start_flags(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
