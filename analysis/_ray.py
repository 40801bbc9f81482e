"""Connect to Ray as a researcher expects: an existing cluster if there is one, else a local Ray.

- Ray already initialised in this process (a test, a sweep script calling ``analysis.run``):
  reuse it.
- ``RAY_ADDRESS`` set (``ray job submit`` sets it): connect there; a failure is an error,
  never a silent fallback to a laptop-sized local Ray.
- Otherwise try ``ray.init(address="auto")`` (a cluster started with ``ray start --head`` or
  the cluster launcher on this machine) and fall back to a local Ray when none is running.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


def init_ray(quiet: bool = True) -> bool:
    """Make sure Ray is initialised; returns True when this call started or joined it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(log_to_driver=not quiet)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
        return True
    try:
        ray.init(address="auto", **kwargs)
    except ConnectionError:
        ray.init(include_dashboard=False, **kwargs)
    return True


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Ray Data progress bars on or off for the block, restored afterwards (a sweep script
    calling ``analysis.run`` keeps its own setting)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    old, ctx.enable_progress_bars = ctx.enable_progress_bars, enabled
    try:
        yield
    finally:
        ctx.enable_progress_bars = old
