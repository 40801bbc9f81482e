"""Real multi-node Ray clusters on this machine, shaped like ``cluster/aws.yaml``.

- :func:`aws_node_types` reads the launcher config's node types: the same names and
  resources (logical GPUs, the ``gpu_small``/``gpu_large`` kinds), CPU counts scaled down to
  what a 2-core CI machine can hold.
- :class:`LocalCluster` is ``ray.cluster_utils.Cluster`` with a free GCS port, a fast node
  health check (a killed node is declared dead in about two seconds, as a spot reclaim is
  eventually), and, with ``autoscaling_config``, Ray's fake multi-node autoscaler
  (``provider: fake_multinode``, what ``ray.cluster_utils.AutoscalingCluster`` starts),
  which launches worker nodes on demand from zero. ``AutoscalingCluster`` itself cannot be
  used here: it runs ``ray stop --force`` (every Ray on the machine, other checkouts' too)
  and needs an ``example.yaml`` the installed wheel does not ship. Its shutdown ends only
  this cluster's processes, by their pids.
- :func:`kill_node` ends every process of one node at once (raylet, agents and the trial
  workers they started) with SIGKILL, as when a spot instance is reclaimed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import yaml

import resources

ROOT = Path(__file__).resolve().parents[1]
FAST_HEALTH_CHECK = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                     "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


def aws_node_types(cpus: dict[str, int]) -> dict[str, dict[str, Any]]:
    """``{name: resources}`` of cluster/aws.yaml's node types, CPU counts replaced by ``cpus``."""
    raw = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    out = {}
    for name, node_type in raw["available_node_types"].items():
        res = dict(node_type["resources"])
        res["CPU"] = cpus[name]
        out[name] = {"resources": res, "max_workers": node_type.get("max_workers", 0),
                     "head": name == raw["head_node_type"]}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _of_session(pid: int, session_name: str) -> bool:
    """Does the process name this cluster's session in its command line or open files? (A
    node's agents retitle themselves, ``ray::DashboardAgent``, but keep its logs open.)"""
    key = session_name.encode()
    try:
        if key in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        return any(session_name in os.readlink(f"/proc/{pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _session_processes(session_name: str) -> dict[int, int]:
    """``{pid: start time}`` of this cluster's processes and all their descendants."""
    roots = [int(p.name) for p in Path("/proc").iterdir()
             if p.name.isdigit() and int(p.name) != os.getpid() and _of_session(int(p.name), session_name)]
    pids = {d for r in roots for d in _descendants(r)} - {os.getpid()}
    return {pid: t for pid in pids if (t := _start_time(pid)) is not None}


def kill_node(node) -> list[int]:
    """SIGKILL every process of ``node`` (a ``ray._private.node.Node``) and its children."""
    roots = [p.process.pid for procs in node.all_processes.values() for p in procs]
    pids = sorted({d for r in roots for d in _descendants(r)})
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


class LocalCluster:
    """A multi-node Ray cluster of this machine's processes; see the module docstring."""

    def __init__(self, head_cpus: int, tmp: Path, autoscaling_config: dict | None = None,
                 head_resources: dict | None = None) -> None:
        import ray._private.services
        from ray.cluster_utils import Cluster

        resources.require("cluster")
        self.port = free_port()
        self.ip = ray._private.services.get_node_ip_address()
        args = dict(num_cpus=head_cpus, gcs_server_port=self.port, include_dashboard=False,
                    resources=head_resources or {}, _system_config=FAST_HEALTH_CHECK,
                    object_store_memory=80 * 1024 * 1024)
        self.config_path = None
        self._saved_env = {k: os.environ.get(k) for k in ("RAY_FAKE_CLUSTER",
                                                          "AUTOSCALER_UPDATE_INTERVAL_S")}
        if autoscaling_config is not None:
            autoscaling_config["provider"]["gcs_address"] = f"{self.ip}:{self.port}"
            self.config_path = tmp / "autoscaling.json"
            self.config_path.write_text(json.dumps(autoscaling_config))
            args["autoscaling_config"] = str(self.config_path)
            # read by the monitor process the head starts (the fake provider requires it)
            os.environ.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        self.cluster = Cluster(initialize_head=True, head_node_args=args)
        self.session = self.cluster.head_node.session_name

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_node(self, node_type: str, resources: dict, env: dict | None = None):
        res = dict(resources)
        return self.cluster.add_node(
            num_cpus=res.pop("CPU", 1), num_gpus=res.pop("GPU", 0), resources=res,
            object_store_memory=80 * 1024 * 1024,
            env_vars={"RAY_NODE_TYPE_NAME": node_type, **(env or {})})

    def shutdown(self) -> None:
        # the fake autoscaler's nodes outlive the head's processes: note every process of
        # this cluster now (pid and start time, so that a reused pid is never touched) ...
        ours = _session_processes(self.session)
        try:
            self.cluster.shutdown()
        finally:
            for k, v in self._saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            # ... and end those still running, and any found since
            end_processes(ours, lambda: _session_processes(self.session))


def end_processes(ours: dict[int, int], more=dict) -> None:
    """SIGTERM, then SIGKILL after a bounded wait, the processes ``{pid: start time}`` still
    running (a reused pid, another start time, is never touched); before each signal,
    ``more()`` adds processes found since."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        ours.update(more())
        alive = [p for p, t in ours.items() if _start_time(p) == t]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for _ in range(30):
            if not [p for p, t in ours.items() if _start_time(p) == t]:
                return
            time.sleep(0.1)


def fake_autoscaling_config(head_resources: dict, worker_types: dict[str, dict]) -> dict:
    """The fake multi-node autoscaler's config (Ray's fake_multinode provider), complete as
    the monitor reads it (the keys ``prepare_config`` would fill in)."""
    types_ = {name: {"resources": t["resources"], "node_config": {}, "min_workers": 0,
                     "max_workers": t["max_workers"]} for name, t in worker_types.items()}
    types_["ray.head.default"] = {"resources": head_resources, "node_config": {}, "max_workers": 0}
    return {"cluster_name": "kdray-test", "max_workers": sum(t["max_workers"] for t in worker_types.values()),
            "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "auth": {"ssh_user": "ubuntu"}, "docker": {},
            "available_node_types": types_, "head_node_type": "ray.head.default",
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": []}
