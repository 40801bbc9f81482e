"""How a sweep runs: one frozen :class:`SweepOptions`, built by the command line
(``kdray/sweep/cli.py``) and passed whole to the driver, each stage and each trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from kdray.sweep.checkpoints import DEFAULT, Cadence
from kdray.tracking import WandbConfig


@dataclass(frozen=True)
class SweepOptions:
    """Everything about *how* a sweep runs; *what* it trains is its experiments.

    Parameters
    ----------
    wandb : where and how the runs log (``--wandb-mode``, ``--wandb-project``, ...;
        ``kdray/tracking.py``); default: W&B disabled.
    resources : per-architecture overrides of a trial's Ray request (``--resources``;
        the defaults are ``kdray/sweep/cluster.py``'s table).
    cohort_sizes : most distilled students per cohort trial, per model family
        (``--cohort-size``; defaults ``kdray.sweep.grid.COHORT_MAX``).
    cadence : when a trial writes a resume checkpoint (``--checkpoint-every-epochs``,
        ``--checkpoint-every-minutes``; ``kdray/sweep/checkpoints.py``).
    max_failures : retries of a trial that fails by its own error (``--max-failures``); a
        trial lost with its node is retried without limit.
    max_concurrent : most trials at once (``--max-concurrent``; default: as many as fit).
    data_dir : raw datasets on every node (``--data-dir``; default ``$KDRAY_DATA_DIR``, else
        ~/.cache/kdray/data).
    use_gpu : ``None``: GPUs when the cluster has (or can start) any; ``False``: CPU only
        (``--smoke-test``).
    progress_interval : seconds between progress lines when stdout is not a terminal
        (``--progress-interval``; default ``$KDRAY_PROGRESS_INTERVAL``, else 30).
    cuda_graph : ``"auto"``: each trial captures its training step in a CUDA graph where it
        can (CUDA, data in memory, no micro-batches) and trains eagerly where capture fails;
        ``"off"``: every trial trains eagerly (``--cuda-graph``). Either way run.json's
        ``cuda_graph`` says which, or why not.
    shared_store : the local store's path is on storage that every node of the cluster
        mounts at that path (``--shared-store``); without it a local store is refused on a
        cluster of more than one node (``kdray/sweep/preflight.py``).
    """

    wandb: WandbConfig = field(default_factory=lambda: WandbConfig(mode="disabled"))
    resources: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    cohort_sizes: Mapping[str, int] = field(default_factory=dict)
    cadence: Cadence = DEFAULT
    max_failures: int = 2
    max_concurrent: int | None = None
    data_dir: str | None = None
    use_gpu: bool | None = None
    progress_interval: float | None = None
    shared_store: bool = False
    cuda_graph: str = "auto"
