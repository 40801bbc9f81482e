"""A trial's resume checkpoints: when it writes one, what one holds, and finding the last one
an earlier sweep left.

Cadence. A trial reports its metrics every epoch, but writes a resume checkpoint (model,
optimiser, schedule, RNG: :meth:`kdray.training.loop.Trainer.state_dict`) only every
``every_epochs`` epochs or ``every_minutes`` minutes, whichever comes first. The defaults
come from what a checkpoint costs and what a lost one costs:

- A checkpoint of ViT-B with AdamW is about 1 GB, of BERT-base about 1.3 GB. Tune uploads
  it to S3 in the trial's report and the driver deletes the previous one. At 15 minutes, a
  1.3 GB upload at ~100 MB/s (one S3 stream) is ~13 s, about 1.5 % of the time, and a spot
  preemption loses at most 15 minutes of one trial.
- A CIFAR-size trial (ResNet-20/56, a few MB of state) finishes an epoch in seconds on a
  GPU. Checkpointing every epoch made dozens of such trials each send the head a checkpoint
  every few seconds; every 10 epochs is a tenth of that, and a preemption loses at most 10
  epochs of a 100-epoch run (minutes).

So ``DEFAULT = Cadence(every_epochs=10, every_minutes=15)``; ``--checkpoint-every-epochs``
and ``--checkpoint-every-minutes`` change it (``kdray/sweep/cli.py``). The last epoch always
writes one, before evaluation: a trial that fails in evaluation or in its commit (out of
memory, a lost node, the store) is retried from there, evaluates at once and trains no epoch
again. It costs one checkpoint per trial (~13 s for BERT-base's 1.3 GB, above).

What one holds: the trainer's state (``kdray/training/state.py``, :data:`STATE`) and
:data:`META`, ``{"run_ids", "epoch", "failed"}``: the cohort's runs, the epoch, and the students
that had failed. :func:`earlier_checkpoints` finds, under ``{store}/tune``, the latest one of
each run that an earlier sweep started and did not finish (its driver died, a trial ran out
of retries), so a rerun resumes there.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

from kdray.store import Store
from kdray.training.state import STATE, save_state

META = "checkpoint.json"  # beside STATE in a trial checkpoint: {run_ids, epoch, failed}


@dataclass(frozen=True)
class Cadence:
    """Write a resume checkpoint every ``every_epochs`` epochs or ``every_minutes`` minutes,
    whichever comes first, and always after the last epoch."""

    every_epochs: int = 10
    every_minutes: float = 15.0

    def __post_init__(self) -> None:
        e, m = self.every_epochs, self.every_minutes
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise ValueError(f"--checkpoint-every-epochs: {e!r} is not an integer >= 1")
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (m > 0) or math.isinf(m):
            raise ValueError(f"--checkpoint-every-minutes: {m!r} is not a number of minutes > 0")

    def clock(self, start_epoch: int = 0) -> "CheckpointClock":
        return CheckpointClock(self, start_epoch)


DEFAULT = Cadence()


class CheckpointClock:
    """When the next checkpoint of one trial is due, counted from its start (or resume)."""

    def __init__(self, cadence: Cadence, start_epoch: int = 0, now=time.monotonic) -> None:
        self.cadence, self._now = cadence, now
        self.last_epoch, self.last_time = start_epoch, now()

    def due(self, epoch: int, final_epoch: int | None = None) -> bool:
        """Is a checkpoint due after ``epoch``? Always after ``final_epoch`` (the last epoch:
        evaluation then starts from it)."""
        if final_epoch is not None and epoch >= final_epoch:
            return True
        return (epoch - self.last_epoch >= self.cadence.every_epochs
                or self._now() - self.last_time >= 60.0 * self.cadence.every_minutes)

    def saved(self, epoch: int) -> None:
        self.last_epoch, self.last_time = epoch, self._now()


def write_checkpoint(folder: str, state: dict[str, Any], run_ids: Iterable[str], epoch: int,
                     failed: Iterable[str]) -> None:
    """A resume checkpoint in ``folder``: the trainer's ``state`` and its :data:`META`."""
    save_state(state, folder)
    with open(os.path.join(folder, META), "w") as f:
        json.dump({"run_ids": list(run_ids), "epoch": epoch, "failed": sorted(failed)}, f)


def earlier_checkpoints(store: Store, run_ids: set[str]) -> dict[str, str]:
    """For runs an earlier sweep started but did not finish (its driver died, a trial ran out
    of retries), the store path of the latest epoch checkpoint Tune kept under ``{store}/tune``.
    A cohort's checkpoint serves each of its students that had not failed; a damaged
    :data:`META` is passed over."""
    from pyarrow import fs as pafs

    sel = pafs.FileSelector(store.path("tune"), recursive=True, allow_not_found=True)
    best: dict[str, tuple[int, str]] = {}
    for info in store.fs.get_file_info(sel):
        if info.type != pafs.FileType.File or info.base_name != META:
            continue
        try:  # a damaged checkpoint.json (not JSON, not an object, wrong types) is passed over
            meta = json.loads(store.read_bytes(info.path))
            epoch, failed = int(meta.get("epoch", 0)), set(meta.get("failed", ()))
            ids = [r for r in meta.get("run_ids") or [meta.get("run_id")] if isinstance(r, str)]
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        state = info.path.rsplit("/", 1)[0] + "/" + STATE
        for run_id in ids:
            if run_id in run_ids and run_id not in failed and epoch > best.get(run_id, (0, ""))[0]:
                if store.exists(state):
                    best[run_id] = (epoch, state)
    return {run_id: path for run_id, (_, path) in best.items()}
