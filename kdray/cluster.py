"""Connect to Ray as a researcher expects: the running cluster if there is one, else a local Ray.

- Ray already initialised in this process (a test, a sweep script calling the analysis):
  reuse it.
- ``RAY_ADDRESS`` set (``ray job submit`` sets it): connect there; a failure is an error,
  never a silent fallback to a laptop-sized local Ray.
- Otherwise ``ray.init(address="auto")`` joins a cluster running on this machine (the head
  node under ``ray submit``, or ``ray start --head``), and a local Ray starts when none is.
"""

from __future__ import annotations

import os


def init_ray(*, quiet: bool = True, num_cpus: int | None = None) -> str:
    """Make sure Ray is initialised; returns ``"existing"``, ``"cluster"`` or ``"local"``."""
    import ray

    if ray.is_initialized():
        return "existing"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=not quiet)
        return "cluster"
    try:
        ray.init(address="auto", log_to_driver=not quiet)
        return "cluster"
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet)
        return "local"


# The cluster launcher's copy of cluster/aws.yaml on the head node (Ray Tune reads it too).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def cluster_has_gpu() -> bool:
    """GPUs in the cluster now, or in a worker type the autoscaler can start: an autoscaling
    cluster starts with its head alone, before any GPU node is up."""
    import ray
    import yaml

    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    path = os.path.expanduser(BOOTSTRAP_CONFIG)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        node_types = (yaml.safe_load(f) or {}).get("available_node_types", {})
    return any((t.get("resources") or {}).get("GPU", 0) > 0 for t in node_types.values())


def largest_node_cpus() -> float:
    """CPUs of the biggest alive node (a trial asking for more could never be placed)."""
    import ray

    return max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
