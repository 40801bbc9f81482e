"""Resume checkpoints: when a trial writes one, and how it is written and read back.

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
and ``--checkpoint-every-minutes`` change it (``kdray.sweep.cli``). The last epoch writes no resume
checkpoint: the run commits its results right after it.

Reading. :func:`load_state` always loads to the CPU (``map_location="cpu"``), so a
checkpoint written on a GPU resumes on any node, CPU-only ones included;
:func:`restore` hands it to the trainer, which moves each tensor to its own device, and then
empties the loaded dict, so no second copy of the model and optimiser stays referenced for
the rest of the trial.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

STATE = "state.pt"  # the Trainer state inside a checkpoint folder


@dataclass(frozen=True)
class Cadence:
    """Write a resume checkpoint every ``every_epochs`` epochs or ``every_minutes`` minutes,
    whichever comes first (never after the last epoch)."""

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
        """Is a checkpoint due after ``epoch``? Never after ``final_epoch``."""
        if final_epoch is not None and epoch >= final_epoch:
            return False
        return (epoch - self.last_epoch >= self.cadence.every_epochs
                or self._now() - self.last_time >= 60.0 * self.cadence.every_minutes)

    def saved(self, epoch: int) -> None:
        self.last_epoch, self.last_time = epoch, self._now()


def save_state(state: dict[str, Any], folder: str | os.PathLike) -> str:
    """Write ``state`` (a Trainer state dict) into ``folder``; returns the file's path."""
    import torch

    path = os.path.join(os.fspath(folder), STATE)
    torch.save(state, path)
    return path


def load_state(source: str | os.PathLike | bytes | BinaryIO) -> dict[str, Any]:
    """A Trainer state from a file path, the bytes of one, or an open file, with every tensor
    on the CPU whatever device it was saved from."""
    import torch

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    return torch.load(source, map_location="cpu", weights_only=False)


def restore(trainer, state: dict[str, Any]) -> int:
    """Load ``state`` into ``trainer`` (it moves the tensors to its device), then empty
    ``state`` so the loaded CPU copy is freed; returns the epoch resumed from."""
    trainer.load_state_dict(state)
    state.clear()
    return trainer.epoch
