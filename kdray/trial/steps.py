"""The trial's three steps, for one run or a cohort: train, predict, commit (see
``kdray/trial/__init__.py``)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from kdray.data import DatasetSplits, load_dataset
from kdray.models import build_model
from kdray.spec import RunSpec
from kdray.store import Predictions, Store
from kdray.training.loop import Trainer, check_cohort
from kdray.training.state import restore
from kdray.trial import teacher_logits
from kdray.trial.provenance import Provenance, code_version, device_name, this_host

EpochCallback = Callable[[Trainer, dict[str, dict[str, float]]], None]


class TeacherMissingError(RuntimeError):
    """A DS run's teacher is not complete in the store."""


@dataclass(frozen=True)
class TrialOptions:
    """How a trial runs (what it trains is its specs).

    Parameters
    ----------
    device : ``cpu``, ``cuda``, ``cuda:1``; default CUDA when available.
    data_root : raw datasets on this node (default ``$KDRAY_DATA_DIR``, else ~/.cache/kdray/data).
    resume : a :meth:`Trainer.state_dict` to continue from (a resume checkpoint).
    on_epoch : ``on_epoch(trainer, {run_id: metrics})`` after every epoch (a Ray trial reports
        and checkpoints there; the command line prints and logs to W&B).
    num_workers : DataLoader workers of a streamed dataset.
    cuda_graph : capture the training step in a CUDA graph (default ``$KDRAY_CUDA_GRAPH``,
        else on).
    node : where it runs, for run.json (a Ray trial names its node; default: this host).
    """

    device: str | None = None
    data_root: str | os.PathLike | None = None
    resume: dict[str, Any] | None = None
    on_epoch: EpochCallback | None = None
    num_workers: int = 4
    cuda_graph: bool | None = None
    node: Mapping[str, Any] | None = None


class CohortResult(dict):
    """``run_id -> run.json record`` of the committed runs of a cohort, plus ``failed``:
    ``run_id -> error`` of the students that stopped (e.g. a non-finite loss)."""

    def __init__(self, records: dict[str, dict[str, Any]], failed: dict[str, str]) -> None:
        super().__init__(records)
        self.failed = failed


def run(spec: RunSpec, store: Store | str, options: TrialOptions | None = None,
        **fields: Any) -> dict[str, Any]:
    """Train, evaluate and commit one run; returns its run.json record (see :func:`run_cohort`).
    A run whose loss became non-finite raises ``RuntimeError`` and commits nothing."""
    result = run_cohort([spec], store, options, **fields)
    if spec.run_id in result.failed:
        raise RuntimeError(f"{spec.run_id}: {result.failed[spec.run_id]}")
    return result[spec.run_id]


def run_cohort(specs: Sequence[RunSpec], store: Store | str, options: TrialOptions | None = None,
               **fields: Any) -> CohortResult:
    """Train a cohort in lockstep, predict its test split, then commit each run to ``store``
    exactly as a lone run. ``options`` (:class:`TrialOptions`), or single ``fields`` of it
    (``run_cohort(specs, store, device="cpu")``).

    The teacher's weights are read once and checked against the checksum in its run.json.
    A DS cohort replays the teacher's logits that an earlier cohort of the same data stream
    left in the store, else records them there (``kdray/trial/teacher_logits.py``).
    Each student commits its own predictions.parquet, model.safetensors and run.json; a
    student that failed commits nothing and is in the result's ``failed``.
    """
    options = dataclasses.replace(options or TrialOptions(), **fields)
    store = store if isinstance(store, Store) else Store(store)
    specs = list(specs)
    check_cohort(specs)
    teacher_id = check_teacher(specs[0], store)  # before any work
    provenance = Provenance([s.run_id for s in specs], teacher_id, dict(options.node or this_host()))
    trainer, data = prepare(specs, store, options)
    resumed_from = trainer.epoch
    logits_path = None
    if teacher_id is not None:  # replay an earlier cohort's teacher logits, or record them
        logits_path, provenance.teacher_logits = teacher_logits.attach(trainer, store, specs[0])
    history: dict[str, list[dict[str, float]]] = {s.run_id: [] for s in specs}
    trainer.fit(_recording(history, options.on_epoch))  # 1. train
    provenance.cuda_graph = graph_outcome(trainer)
    teacher_logits.save(trainer, store, logits_path)
    preds, labels = trainer.predict_all()  # 2. predict (frees what training held first)
    provenance.eval_batch_size = trainer.eval_batch_size  # None unless memory shrank it
    code, device = code_version(), device_name(trainer.device)  # once: a git call each
    records = {}
    for student in trainer.active:  # 3. commit: the students predict_all predicted, in order
        predictions = Predictions(preds[student.run_id], labels, data.num_classes,
                                  data.attributes, data.class_names, data.attribute_values)
        record = provenance.record(history[student.run_id], resumed_from, code, device)
        records[student.run_id] = store.commit_run(student.spec, predictions, record,
                                                   weights=student.model.state_dict())
    return CohortResult(records, trainer.failed)


def prepare(specs: list[RunSpec], store: Store, options: TrialOptions
            ) -> tuple[Trainer, DatasetSplits]:
    """The cohort's trainer, ready to train, and its data: a DS cohort's teacher with its
    committed weights, and the resume state when there is one."""
    data = load_data(specs[0], options.data_root)
    teacher = load_teacher(specs[0], store, data) if specs[0].role == "ds" else None
    trainer = Trainer(specs, data, device=options.device, teacher=teacher,
                      num_workers=options.num_workers, cuda_graph=options.cuda_graph)
    del teacher  # the trainer holds the device copy
    if options.resume is not None:
        restore(trainer, options.resume)  # moved to the trainer's device; the loaded copy dropped
    return trainer, data


def _recording(history: dict[str, list[dict[str, float]]],
               on_epoch: EpochCallback | None) -> EpochCallback:
    """The trainer's epoch callback: each student's metrics into ``history`` (run.json's),
    then the caller's ``on_epoch``."""
    def epoch_done(trainer: Trainer, metrics: dict[str, dict[str, float]]) -> None:
        for run_id, m in metrics.items():
            history[run_id].append(m)
        if on_epoch is not None:
            on_epoch(trainer, metrics)
    return epoch_done


def check_teacher(spec: RunSpec, store: Store) -> str | None:
    """The teacher run_id of a DS spec, after checking it is complete in ``store``."""
    if spec.role != "ds":
        return None
    teacher_id = spec.teacher_spec().run_id
    status = store.status(teacher_id)
    if not status.complete:
        raise TeacherMissingError(
            f"teacher {teacher_id} of DS run {spec.run_id} is not complete in {store} "
            f"({status.reason}); train the teacher first (a sweep runs teachers in stage 1)")
    return teacher_id


@functools.lru_cache(maxsize=4)
def _load(name: str, options_json: str, root: str | None) -> DatasetSplits:
    return load_dataset(name, json.loads(options_json), root)


def load_data(spec: RunSpec, data_root: str | os.PathLike | None = None) -> DatasetSplits:
    """The spec's dataset, cached per process (several trials in one worker share it)."""
    return _load(spec.dataset, json.dumps(dict(spec.data), sort_keys=True),
                 None if data_root is None else os.fspath(data_root))


def load_teacher(spec: RunSpec, store: Store, data: DatasetSplits) -> torch.nn.Module:
    """The teacher of DS ``spec`` with its committed weights, verified against the
    ``model_sha256`` of its run.json (runs written before that field are read as they are)."""
    teacher_id = spec.teacher_spec().run_id
    model = build_model(spec.teacher_arch, data.num_classes, pretrained=False, **data.model_kwargs())
    model.load_state_dict(store.read_model(teacher_id, verify=True))
    return model


def graph_outcome(trainer: Trainer) -> str:
    """run.json's ``cuda_graph``: ``"captured"`` (the step ran as a CUDA graph replay), or why
    it ran eagerly (``"turned off"``, ``"not on CUDA"``, ``"capture failed: ..."``)."""
    if trainer.captured:
        return "captured"
    return trainer.graph_off or "not captured (no epoch trained after the warm-up)"
