"""A DS cohort's teacher logits in the store: replayed when an earlier cohort of the same data
stream recorded them, else recorded for the next (``kdray.training.teacher_logits``).

    {store}/teacher_logits/{teacher_run_id}/{key}.safetensors     one tensor, "logits"

``key`` is the SHA-256 (16 hex digits) of everything the logits depend on: the cohort key
(dataset and its options, seed, recipe, arch, teacher arch: the batches and their views),
the teacher's weights (its run.json's ``model_sha256``), and where they were computed (the
torch version, and the CPU's instruction set and thread count, or the GPU's name): a cohort replays only
logits that its own device would have computed bit for bit (on the CPU; a GPU's own runs
agree only to float tolerance). Anything else, a missing, unreadable or differently shaped
file, trains as before and records a new one.

A table bigger than ``$KDRAY_TEACHER_LOGITS_MB`` (default 1024 MiB; 0 turns the store of
logits off) is neither recorded nor replayed: it lives on the trainer's device for the
whole run (its size is reckoned in bf16 on CUDA, autocast's output, and float32 on the
CPU). At the paper's CIFAR-100 recipe (100 epochs of 390 steps of 128 samples, 100 classes)
a table is 952 MiB in bf16 on a GPU, CIFAR-10's 95 MiB; 24 px Trifeature's (100 x 46 x 64 x
10, float32) 11.2 MiB.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import torch

from kdray.spec import RunSpec
from kdray.store import Store
from kdray.training.loop import Trainer
from kdray.training.teacher_logits import TeacherLogits

LIMIT_ENV, DEFAULT_LIMIT_MB = "KDRAY_TEACHER_LOGITS_MB", 1024


def limit_mb() -> int:
    """``$KDRAY_TEACHER_LOGITS_MB`` (an integer >= 0), else 1024; ``ValueError`` naming a bad value."""
    value = os.environ.get(LIMIT_ENV, "").strip()
    if not value:
        return DEFAULT_LIMIT_MB
    if not value.isdigit():
        raise ValueError(f"${LIMIT_ENV}: {value!r} is not an integer >= 0 (MiB; 0 turns it off)")
    return int(value)


def where_computed(device: torch.device) -> str:
    """What a teacher's float results depend on besides its inputs and weights."""
    if device.type == "cuda":
        return f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}"
    return (f"torch {torch.__version__} on {device.type} ({torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads)")  # a kernel may split its sums by thread


def logits_name(store: Store, spec: RunSpec, device: torch.device) -> str:
    """Where in ``store`` the teacher logits of ``spec``'s cohort, computed on ``device``, live."""
    teacher_id = spec.teacher_spec().run_id
    teacher = store.read_run_json(teacher_id) or {}
    weights = teacher.get("model_sha256") or teacher.get("predictions_sha256")
    what = json.dumps({"cohort": spec.cohort_key, "teacher_weights": weights,
                       "computed": where_computed(device)}, sort_keys=True)
    key = hashlib.sha256(what.encode()).hexdigest()[:16]
    return f"teacher_logits/{teacher_id}/{key}.safetensors"


def attach(trainer: Trainer, store: Store, spec: RunSpec) -> tuple[str | None, str]:
    """Give a DS cohort's ``trainer`` its teacher logits: replayed from the store when there,
    else recorded (from epoch 0 only: a resumed cohort did not see the earlier epochs).
    Returns ``(path to save to, or None; what run.json records)``."""
    shape = trainer.teacher_logits_shape()
    nbytes = (2 if trainer.cuda else 4) * shape[0] * shape[1] * shape[2] * shape[3]  # bf16 / fp32
    if nbytes > limit_mb() * 2 ** 20:
        return None, f"computed (the table, {nbytes / 2 ** 20:.0f} MiB, is over ${LIMIT_ENV})"
    name = logits_name(store, spec, trainer.device)
    path = store.path(name)
    table = _read(store, path)
    if table is not None and tuple(table.shape) == shape:
        trainer.use_teacher_logits(TeacherLogits(shape, trainer.device, table))
        return None, f"replayed from {name}"
    if trainer.epoch > 0:
        return None, "computed (resumed: the earlier epochs' logits were not recorded)"
    trainer.use_teacher_logits(TeacherLogits(shape, trainer.device))
    return path, "computed and recorded"


def save(trainer: Trainer, store: Store, path: str | None) -> None:
    """Write the recorded table when the cohort recorded every epoch (a failure only warns:
    the logits are a saving, the runs do not depend on them)."""
    logits = trainer.teacher_logits
    if path is None or logits is None or logits.replaying or not logits.complete:
        return
    from safetensors.torch import save as to_bytes

    try:
        store.write_bytes(path, to_bytes({"logits": logits.table.cpu().contiguous()}))
    except OSError as e:
        warnings.warn(f"teacher logits: not written to {path}: {e}")


def _read(store: Store, path: str) -> torch.Tensor | None:
    from safetensors.torch import load

    try:
        return load(store.read_bytes(path))["logits"]
    except FileNotFoundError:  # as Store.read_run_json: one request, not a HEAD then a GET
        return None
    except Exception as e:  # noqa: BLE001 - unreadable: train as without it, record anew
        warnings.warn(f"teacher logits: {path} unreadable ({type(e).__name__}: {e}); "
                      f"the teacher runs instead")
        return None
