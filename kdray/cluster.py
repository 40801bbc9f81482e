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


def cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def largest_node_cpus() -> float:
    """CPUs of the biggest alive node (a trial asking for more could never be placed)."""
    import ray

    return max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
