"""One run, or one cohort of runs, from its RunSpec to its folder in the store, in three steps:

1. **train**: the data, the models (a DS run's teacher with its committed weights) and the
   training loop (:class:`~kdray.training.loop.Trainer`), resumed from a checkpoint if given;
2. **predict**: every test sample, by every student;
3. **commit**: each student's ``predictions.parquet``, ``model.safetensors`` and, last,
   ``run.json`` (:meth:`kdray.store.Store.commit_run`).

``run_cohort(specs, store)`` does it for a cohort: DS runs of one teacher seed that differ
only in temperature and alpha, trained in lockstep with one teacher forward per batch, each
committing its own run folder; ``run(spec, store)`` for one run. The same functions run in a
test, a benchmark, a GPU check with no cluster, or inside a Ray Tune trial
(``kdray/sweep/trainable.py``), which passes the state to resume from and an ``on_epoch``
callback that reports to Tune and writes resume checkpoints. W&B sees a trial only through
that callback.

Command line::

    python -m kdray.trial --store ./results --dataset digits --role teacher --arch resnet20 --epochs 2
    python -m kdray.trial --store s3://bucket/study --spec spec.json
    python -m kdray.trial --store ./results --dataset digits --role ds --arch lenet5 \\
        --teacher-arch resnet20 --temperature 2 4 8 --alpha 0.8    # a cohort: one teacher pass
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from kdray.checks import expected, valid
from kdray.data import DatasetSplits, load_dataset
from kdray.models import build_model
from kdray.provenance import Provenance, code_version, device_name, this_host
from kdray.spec import RunSpec
from kdray.store import Predictions, Store
from kdray.training.loop import Trainer, check_cohort
from kdray.training.state import restore

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
    history: dict[str, list[dict[str, float]]] = {s.run_id: [] for s in specs}
    trainer.fit(_recording(history, options.on_epoch))  # 1. train
    preds, labels = trainer.predict_all()  # 2. predict
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


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdray.trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="./results", help="local path or s3://bucket/prefix")
    p.add_argument("--spec", nargs="+", metavar="FILE",
                   help="JSON files with a RunSpec (or a run.json); several make a cohort")
    p.add_argument("--dataset")
    p.add_argument("--role", choices=["teacher", "nds", "ds"])
    p.add_argument("--arch")
    p.add_argument("--seed", type=int)
    p.add_argument("--teacher-arch", dest="teacher_arch")
    p.add_argument("--temperature", type=float, nargs="+", metavar="T",
                   help="one or more: several train as one cohort sharing the teacher's forward")
    p.add_argument("--alpha", type=float, nargs="+", metavar="A")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--data", nargs="*", metavar="KEY=VALUE", help="dataset options, e.g. image_size=32")
    p.add_argument("--data-dir", help="raw datasets on this node (default $KDRAY_DATA_DIR or ~/.cache/kdray/data)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false", default=None,
                   help="train eagerly on CUDA, without capturing the step in a CUDA graph "
                        "(also $KDRAY_CUDA_GRAPH=0)")
    p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"])
    p.add_argument("--wandb-project", default="kdray")
    return p


# flag, its parsed name, the RunSpec field whose rule applies (or a check of its own)
FIELD_FLAGS = (("--dataset", "dataset"), ("--arch", "arch"), ("--teacher-arch", "teacher_arch"),
               ("--seed", "seed"), ("--temperature", "temperature"), ("--alpha", "alpha"),
               ("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr"))
OTHER_FLAGS = (
    ("--store", "store", lambda v: bool(v.strip()), "a local path or s3://bucket/prefix"),
    ("--spec", "spec", os.path.isfile, "a JSON file"),
    ("--data", "data", lambda v: "=" in v and bool(v.partition("=")[0]), "KEY=VALUE"),
    ("--data-dir", "data_dir", lambda v: bool(v.strip()) and not os.path.isfile(v), "a directory"),
    ("--wandb-project", "wandb_project", lambda v: bool(v.strip()), "a W&B project name"))


def check_flags(args: argparse.Namespace) -> None:
    """Every flag, before any work: a ValueError naming the flag, the value as parsed (-2.0,
    as RunSpec's own messages show it) and what was expected."""
    checks = [(flag, name, lambda v, f=name: valid(f, v), expected(name))
              for flag, name in FIELD_FLAGS]
    for flag, name, ok, wanted in OTHER_FLAGS[:2] + tuple(checks) + OTHER_FLAGS[2:]:
        value = getattr(args, name, None)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ValueError(f"{flag}: no value; expected at least one {wanted}")
        for v in values:
            if not ok(v):
                raise ValueError(f"{flag}: {v!r} is not {wanted}")
    if getattr(args, "device", None) is not None:
        _check_device(args.device)


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device: {device!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {device!r} is not available on this machine (no CUDA)")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _base_dicts(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.spec:
        out = []
        for path in args.spec:
            d = json.loads(Path(path).read_text())
            out.append(dict(d.get("spec", d)))  # a run.json works too
        return out
    missing = [f"--{k.replace('_', '-')}" for k in ("dataset", "role", "arch")
               if getattr(args, k) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: required unless --spec FILE is given")
    return [{"dataset": args.dataset, "role": args.role, "arch": args.arch}]


def specs_from_args(args: argparse.Namespace) -> list[RunSpec]:
    """The runs the flags name: each ``--spec`` file, or the flags' spec; several
    ``--temperature``/``--alpha`` values make one DS run per combination (a cohort)."""
    specs = []
    for d in _base_dicts(args):
        for key in ("teacher_arch", "epochs", "batch_size", "lr", "seed"):
            value = getattr(args, key)
            if value is not None:
                d[key] = value
        options = dict(d.get("data") or {})
        for item in args.data or []:
            if "=" not in item:
                raise ValueError(f"--data: {item!r} is not KEY=VALUE")
            key, value = item.split("=", 1)
            options[key] = _parse_value(value)
        d["data"] = options
        for t in args.temperature or [d.get("temperature")]:
            for a in args.alpha or [d.get("alpha")]:
                specs.append(RunSpec.from_dict({**d, "temperature": t, "alpha": a}))
    check_cohort(specs)
    return specs


def main(argv: list[str] | None = None) -> int:
    """``python -m kdray.trial``: check the flags, train the cohort, print each run's result;
    each run logs to its own W&B run (``kdray.sweep.tracking.Tracker``)."""
    from kdray.connect import resolve_mode
    from kdray.sweep.tracking import Tracker, WandbConfig, default_dir
    from kdray.training import gpu

    args = parser().parse_args(argv)
    try:
        check_flags(args)  # every flag, before any work
        specs = specs_from_args(args)
        store = Store(args.store)
        mode = resolve_mode(args.wandb_mode)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for spec in specs:
        print(f"{spec.run_id}: training on {store}", flush=True)
    try:
        check_teacher(specs[0], store)
    except TeacherMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    gpu.prepare_process(deterministic=any(s.deterministic for s in specs))  # before CUDA
    wandb = WandbConfig(mode=mode, project=args.wandb_project, dir=default_dir(store))
    trackers = {s.run_id: Tracker(s, wandb) for s in specs}
    try:
        result = run_cohort(specs, store, device=args.device, data_root=args.data_dir,
                            cuda_graph=args.cuda_graph,
                            on_epoch=functools.partial(_show, trackers, specs[0].epochs))
    except BaseException:
        for tracker in trackers.values():
            tracker.finish(exit_code=1)
        raise
    return _report(result, trackers, store)


def _show(trackers: dict, epochs: int, trainer: Trainer,
          metrics: dict[str, dict[str, float]]) -> None:
    for run_id, m in metrics.items():
        trackers[run_id].log_epoch(m)
        print(f"  {run_id}  epoch {m['epoch']:>3}/{epochs}  loss {m['loss']:.4f}  "
              f"train acc {100 * m['train_accuracy']:.2f}%  ({m['epoch_seconds']:.1f}s)",
              flush=True)


def _report(result: CohortResult, trackers: dict, store: Store) -> int:
    """Each run's final line and W&B summary; exit code 1 when a student failed."""
    for run_id, record in result.items():
        trackers[run_id].log_final(record["test_accuracy"], record["per_class_accuracy"],
                                   record["per_class_n"], class_names=record["class_names"])
        print(f"{run_id}: test accuracy {100 * record['test_accuracy']:.2f}% on "
              f"{record['n_test']} samples, {record['wall_seconds']:.1f}s; committed to {store}")
    for run_id, error in result.failed.items():
        print(f"FAILED {run_id}: {error}", file=sys.stderr)
    for run_id, tracker in trackers.items():
        tracker.finish(exit_code=1 if run_id in result.failed else 0)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
