"""Ray helpers of the analysis job: quiet Ray Data progress and logs for a block."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from kdray.connect import init_ray  # noqa: F401  (re-exported for analysis.read)


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Ray Data progress bars on or off for the block, restored afterwards (a sweep script
    calling ``kdray.analysis.run`` keeps its own setting)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    log = logging.getLogger("ray.data")
    old, ctx.enable_progress_bars = ctx.enable_progress_bars, enabled
    old_level = log.level
    if not enabled:
        log.setLevel(logging.WARNING)  # no "Starting execution of Dataset ..." INFO lines
    try:
        yield
    finally:
        ctx.enable_progress_bars = old
        log.setLevel(old_level)
