"""A trainer's saved state (a resume checkpoint's content): written, read back, restored.

:func:`save_state` writes :meth:`kdray.training.loop.Trainer.state_dict` (every student's
model, optimiser, schedule and RNG state, and the epoch) into a folder. :func:`load_state`
always loads to the CPU (``map_location="cpu"``), so a checkpoint written on a GPU resumes
on any node, CPU-only ones included;
:func:`restore` hands it to the trainer, which moves each tensor to its own device, and then
empties the loaded dict, so no second copy of the model and optimiser stays referenced for
the rest of the trial.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

STATE = "state.pt"  # the Trainer state inside a checkpoint folder


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
