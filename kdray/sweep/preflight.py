"""Before any work, the cluster a sweep will run on: its worker nodes joined, and a store that
every node can reach (or a clear error).

1. **Workers.** ``ray up`` returns once the head is up; the head's autoscaler then starts the
   workers it must keep (each node type's ``min_workers``). On Ray's ``local`` provider
   (``cluster/onprem.yaml``) these are all the listed machines, and their GPUs and kinds are
   known only once they join (each declares its own, ``kdray.sweep.node_kind``). A sweep started
   before that would see a cluster without GPUs and run every trial on the head's CPUs. So
   the sweep first waits, at most :data:`JOIN_TIMEOUT_S`, until the head and those workers
   are alive, and stops with an error naming what is missing otherwise. (AWS node types
   have ``min_workers: 0`` and declare their resources up front: nothing to wait for.) A
   SLURM job (``cluster/slurm.sbatch``) waits for its nodes itself, before it starts the
   sweep: ``python -m kdray.sweep.preflight --nodes N`` (:func:`main`).
2. **The store.** :class:`kdray.store.Store` makes a local path absolute on the driver, and
   every trial opens that path on the disk of the node it runs on: on a cluster of several
   nodes the runs would scatter over the nodes' disks (lost with a spot node, unseen by a DS
   trial on another node looking for its teacher, and by the analysis on the head). So when
   the cluster has more than one node (alive, or that its launcher config may start), a local
   ``--store`` is refused before any work, unless ``--shared-store`` declares it to be on
   storage that every node mounts at that same path (NFS, a parallel filesystem). The error
   names the store and the nodes and says what to pass instead.

   W&B follows the same rule through its default directory: W&B writes only on the driver's
   node (one logging actor pinned there, ``kdray.tracking.tune_callback``, and the analysis
   run in the driver), and its default directory is ``{store}/wandb`` for a local store (on
   the shared storage with ``--shared-store``, refused with the store without it) and
   ``./wandb`` on the driver's node for an S3 store (``kdray.connect.default_dir``). An
   explicit ``--wandb-dir`` is the driver node's path, which is where W&B writes.

:func:`check` does both; ``kdray/sweep/cli.py`` calls it once, after the flags are checked
and before the sweep stages its first dataset (not for ``--dry-run``, which writes nothing to
the store).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from kdray.connect import default_dir, join_cluster
from kdray.store import Store, redact
from kdray.sweep.cluster import NODE_KINDS, launcher_config, launcher_config_path
from kdray.sweep.options import SweepOptions
from kdray.tracking import WandbConfig

JOIN_TIMEOUT_S = 300.0  # how long a sweep waits for the launcher's workers to join
SHARED_FLAG = "--shared-store"


def cluster_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the Ray cluster the sweep will run on ([] when it will start its
    own local Ray: no cluster running, or ``RAY_ADDRESS=local``). Joins that cluster."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS", "").strip() == "local":
            return []  # a new local Ray: this machine only
        if join_cluster() is None:
            return []
    return [n for n in ray.nodes() if n.get("Alive")]


def expected_nodes(config: dict[str, Any]) -> int:
    """Nodes the launcher keeps running: the head and every node type's ``min_workers``."""
    return 1 + sum(int(t.get("min_workers", 0) or 0)
                   for t in (config.get("available_node_types") or {}).values())


def wait_for_workers(config: dict[str, Any], log: Callable[[str], None] = print,
                     timeout_s: float = JOIN_TIMEOUT_S) -> list[dict[str, Any]]:
    """Wait until the launcher's :func:`expected_nodes` are alive; returns the alive nodes.
    Raises ValueError, naming the nodes that joined, when they are not after ``timeout_s``."""
    return wait_for_nodes(
        expected_nodes(config), f"the workers that `ray up` starts ({launcher_config_path()})",
        "see why on the head with `ray monitor CONFIG`, or list only the machines that can "
        "join", log, timeout_s)


def wait_for_nodes(want: int, whose: str, hint: str, log: Callable[[str], None] = print,
                   timeout_s: float = JOIN_TIMEOUT_S) -> list[dict[str, Any]]:
    """Wait until ``want`` nodes of the cluster are alive (``whose``: which nodes, for the
    messages; ``hint``: where to see why they did not join); returns the alive nodes ([] when
    there is no cluster). Raises ValueError, naming the nodes that joined, after
    ``timeout_s``."""
    nodes = cluster_nodes()
    deadline = time.monotonic() + timeout_s
    if nodes and len(nodes) < want:
        log(f"cluster: {len(nodes)} of {want} nodes alive; waiting up to {timeout_s:.0f} s for "
            f"{whose}")
    while nodes and len(nodes) < want:
        if time.monotonic() > deadline:
            raise ValueError(f"cluster: {len(nodes)} of the {want} nodes joined in "
                             f"{timeout_s:.0f} s, waiting for {whose}: {describe(nodes)}; "
                             f"{hint}")
        time.sleep(2.0)
        nodes = cluster_nodes()
    return nodes


def describe(nodes: list[dict[str, Any]]) -> str:
    """``<ip> (head, node <id>), <ip> (node <id>, gpu_small), ...``, with each node's name
    where it has one of its own (a SLURM node's, ``cluster/slurm.sbatch``)."""
    parts = []
    for n in sorted(nodes, key=lambda n: not n.get("Resources", {}).get("node:__internal_head__")):
        res = n.get("Resources", {})
        what = ["head"] if res.get("node:__internal_head__") else []
        what.append(f"node {str(n.get('NodeID', ''))[:12]}")
        if n.get("NodeName") not in (None, "", n.get("NodeManagerAddress")):
            what.append(str(n["NodeName"]))  # the name `ray start --node-name` gave it
        what += [k for k in NODE_KINDS if res.get(k)]
        parts.append(f"{n.get('NodeManagerAddress', '?')} ({', '.join(what)})")
    return ", ".join(parts)


def store_error(store: Store, nodes: list[dict[str, Any]], max_workers: int,
                wandb: WandbConfig) -> str:
    """Why a local ``store`` cannot serve this multi-node cluster, and what to pass instead."""
    where = f"{len(nodes)} node(s) alive: {describe(nodes)}"
    if max_workers > len(nodes) - 1:
        where += f"; its launcher config may start up to {max_workers} worker node(s)"
    on_store = wandb.mode != "disabled" and wandb.dir == default_dir(store)
    wandb_said = (f" W&B's default directory, {wandb.dir}, is refused with it." if on_store
                  else "")
    return (f"--store: {store.root!r} is a path on this machine's disk, but the sweep runs on a "
            f"Ray cluster of more than one node ({where}). Each trial would write its runs to "
            f"the disk of the node it runs on: the runs would scatter over the nodes, and the "
            f"DS trials and the analysis would not find them.{wandb_said} Pass --store "
            f"s3://BUCKET/PREFIX (S3, or an S3-compatible server such as MinIO with "
            f"?endpoint_override=HOST:PORT), or add {SHARED_FLAG} if {store.root!r} is on "
            f"storage that every node mounts at that same path.")


def check(store: Store, options: SweepOptions, log: Callable[[str], None] = print) -> None:
    """Wait for the launcher's workers, then refuse a store some node cannot reach
    (ValueError); see the module docstring. ``options.shared_store``: ``--shared-store``."""
    shared_store = options.shared_store
    if shared_store and not store.is_local:
        raise ValueError(f"{SHARED_FLAG}: --store {redact(store.uri)!r} is not a local path; "
                         f"{SHARED_FLAG} declares a local path to be on storage every node "
                         f"mounts (an S3 store is reachable from every node already)")
    nodes = cluster_nodes()
    config = launcher_config() if nodes else {}  # on a cluster's head: its launcher's config
    if config:
        nodes = wait_for_workers(config, log)
    max_workers = int(config.get("max_workers", 0) or 0)
    if store.is_local and not shared_store and (len(nodes) > 1 or max_workers > 0):
        raise ValueError(store_error(store, nodes, max_workers, options.wandb))


def parser():
    from kdray.cli_help import command_parser

    p = command_parser("python -m kdray.sweep.preflight", PREFLIGHT_HELP)
    p.add_argument("--nodes", type=int, required=True, help="how many nodes must be alive")
    p.add_argument("--timeout", type=float, default=JOIN_TIMEOUT_S, help="seconds to wait")
    return p


PREFLIGHT_HELP = """\
Wait until the Ray cluster at $RAY_ADDRESS has NODES nodes alive, and print them.

    python -m kdray.sweep.preflight --nodes 4      # cluster/slurm.sbatch, before the sweep

Exit status: 0; 1 when the nodes did not join in time (those that did are named); 2 on bad
input."""


def main(argv: list[str] | None = None) -> int:
    """``python -m kdray.sweep.preflight --nodes N``: wait until the Ray cluster at
    ``$RAY_ADDRESS`` has N nodes alive and print them (``cluster/slurm.sbatch``, before it runs
    the sweep script); exit 1 with the nodes that joined when they are not, 2 on a bad flag."""
    args = parser().parse_args(argv)
    if args.nodes < 1 or not args.timeout > 0:
        flag, value = ("--nodes", args.nodes) if args.nodes < 1 else ("--timeout", args.timeout)
        print(f"kdray.sweep.preflight: error: {flag}: {value} is not > 0", file=sys.stderr)
        return 2
    job = os.environ.get("SLURM_JOB_ID")
    whose = f"the Ray nodes of SLURM job {job}" if job else "the Ray nodes started for it"
    try:
        nodes = wait_for_nodes(args.nodes, whose, "each node's `ray start` output is in the "
                               "job's output", timeout_s=args.timeout)
        if not nodes:
            raise ValueError(f"no Ray cluster at $RAY_ADDRESS="
                             f"{os.environ.get('RAY_ADDRESS', '')!r}")
    except (ValueError, ConnectionError) as e:
        print(f"kdray.sweep.preflight: error: {e}", file=sys.stderr)
        return 1
    print(f"cluster: {len(nodes)} of {args.nodes} nodes joined: {describe(nodes)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
