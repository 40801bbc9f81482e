"""One run: train a RunSpec, evaluate it on the test split, commit it to the store.

``run(spec, store)`` trains (a DS run first loads its teacher's weights from the store),
predicts every test sample, and writes ``predictions.parquet``, ``model.safetensors`` and,
last, ``run.json``. It returns the run's metrics. ``run_cohort(specs, store)`` does the same
for a cohort: DS runs of one teacher seed that differ only in temperature and alpha, trained
in lockstep with one teacher forward per batch, each committing its own run folder.
The same functions run in a test, a
benchmark, a GPU check with no cluster, or inside a Ray Tune trial (``kdray.sweep.driver``), which
passes ``resume`` and ``on_epoch`` to checkpoint every epoch.

Command line::

    python -m kdray.trial --store ./results --dataset digits --role teacher --arch resnet20 --epochs 2
    python -m kdray.trial --store s3://bucket/study --spec spec.json
    python -m kdray.trial --store ./results --dataset digits --role ds --arch lenet5 \\
        --teacher-arch resnet20 --temperature 2 4 8 --alpha 0.8    # a cohort: one teacher pass
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kdray import provenance
from kdray.sweep import runtime
from kdray.training import gpu
from kdray.training.state import restore
from kdray.data import DatasetSplits, load_dataset
from kdray.sweep.flags import check_trial_flags
from kdray.models import build_model
from kdray.spec import RunSpec
from kdray.store import Store, predictions_table
from kdray.connect import resolve_mode
from kdray.sweep.tracking import Tracker, WandbConfig, default_dir
from kdray.training.loop import Trainer, check_cohort, per_class_accuracy


class TeacherMissingError(RuntimeError):
    """A DS run's teacher is not complete in the store."""


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


def code_version() -> str:
    """kdray's version plus the commit of the code that runs: ``$KDRAY_COMMIT``, else git,
    else the checkout's ``.git`` read directly (a cluster node; ``kdray.sweep.runtime``)."""
    return provenance.code_version(Path(__file__).parent)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class CohortResult(dict):
    """``run_id -> run.json record`` of the committed runs of a cohort, plus ``failed``:
    ``run_id -> error`` of the students that stopped (e.g. a non-finite loss)."""

    def __init__(self, records: dict[str, dict[str, Any]], failed: dict[str, str]) -> None:
        super().__init__(records)
        self.failed = failed


def run(spec: RunSpec, store: Store | str, **kwargs: Any) -> dict[str, Any]:
    """Train, evaluate and commit one run; returns its run.json record (see :func:`run_cohort`).
    A run whose loss became non-finite raises ``RuntimeError`` and commits nothing."""
    result = run_cohort([spec], store, **kwargs)
    if spec.run_id in result.failed:
        raise RuntimeError(f"{spec.run_id}: {result.failed[spec.run_id]}")
    return result[spec.run_id]


def run_cohort(specs: Sequence[RunSpec], store: Store | str, *, device: str | None = None,
               data_root: str | os.PathLike | None = None, resume: dict[str, Any] | None = None,
               on_epoch: Callable[[Trainer, dict[str, dict[str, float]]], None] | None = None,
               wandb: WandbConfig | None = None, group: str | None = None,
               num_workers: int = 4, cuda_graph: bool | None = None) -> CohortResult:
    """Train a cohort (runs that differ only in temperature and alpha, e.g. the DS runs of
    one teacher seed) in lockstep, then commit each run to ``store`` exactly as a lone run.

    The teacher's weights are read once and checked against the checksum in its run.json.
    ``resume`` is a :meth:`Trainer.state_dict` to continue from; ``on_epoch(trainer,
    {run_id: metrics})`` runs after every epoch (the sweep checkpoints and reports there).
    Each student commits its own predictions.parquet, model.safetensors and run.json; a
    student that failed commits nothing and is in the result's ``failed``. ``cuda_graph``:
    capture the training step in a CUDA graph (default ``$KDRAY_CUDA_GRAPH``, else on).
    """
    store = store if isinstance(store, Store) else Store(store)
    specs = list(specs)
    check_cohort(specs)
    teacher_id = check_teacher(specs[0], store)  # before any work
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    node = runtime.node_info()
    data = load_data(specs[0], data_root)
    teacher = load_teacher(specs[0], store, data) if teacher_id else None
    trainer = Trainer(specs, data, device=device, teacher=teacher, num_workers=num_workers,
                      cuda_graph=cuda_graph)
    del teacher  # the trainer holds the device copy
    if resume is not None:
        restore(trainer, resume)  # moved to the trainer's device; the loaded copy is dropped
    resumed_from = trainer.epoch
    trackers = {s.run_id: Tracker(s, wandb, group) for s in specs}
    history: dict[str, list[dict[str, float]]] = {s.run_id: [] for s in specs}

    def epoch_done(tr: Trainer, metrics: dict[str, dict[str, float]]) -> None:
        for run_id, m in metrics.items():
            history[run_id].append(m)
            trackers[run_id].log_epoch(m)
        if on_epoch is not None:
            on_epoch(tr, metrics)

    records: dict[str, dict[str, Any]] = {}
    try:
        trainer.fit(epoch_done)
        preds, labels = trainer.predict_all()
        n = len(labels)
        per_class_n = np.bincount(labels, minlength=data.num_classes).tolist()
        version, device = code_version(), device_name(trainer.device)  # once: a git call each
        for student in trainer.active:  # the students predict_all predicted, in spec order
            spec, pred = student.spec, preds[student.run_id]
            per_class = per_class_accuracy(labels, pred, data.num_classes)
            test_accuracy = float((pred == labels).mean()) if n else float("nan")
            table = predictions_table(spec.run_id, spec.to_dict(), np.arange(n), labels, pred,
                                      data.attributes)
            sha = store.write_predictions(spec.run_id, table)
            model_sha = store.write_model(spec.run_id, student.model.state_dict(),
                                          {"run_id": spec.run_id})
            finished = dt.datetime.now(dt.timezone.utc)
            record = {
                "run_id": spec.run_id, "spec": spec.to_dict(), "teacher_run_id": teacher_id,
                "test_accuracy": test_accuracy, "per_class_accuracy": per_class,
                "per_class_n": per_class_n, "n_test": n, "num_classes": data.num_classes,
                "attributes": sorted(data.attributes), "predictions_sha256": sha,
                "class_names": data.class_names, "attribute_values": data.attribute_values,
                "model_sha256": model_sha, "cohort": [s.run_id for s in specs],
                "history": history[spec.run_id], "resumed_from_epoch": resumed_from,
                "wall_seconds": time.perf_counter() - t0,
                "started": started.isoformat(), "finished": finished.isoformat(),
                "code_version": version, "torch_version": torch.__version__,
                "python_version": platform.python_version(),
                "device": device, "host": platform.node(),
                "node": node,  # the Ray node (id, type, kind) it trained on, kdray.sweep.runtime
            }
            store.write_run_json(spec.run_id, record)  # the commit marker, last
            trackers[spec.run_id].log_final(test_accuracy, per_class, per_class_n,
                                            class_names=data.class_names)
            records[spec.run_id] = record
    except BaseException:
        for tracker in trackers.values():
            tracker.finish(exit_code=1)
        raise
    for run_id, tracker in trackers.items():
        tracker.finish(exit_code=1 if run_id in trainer.failed else 0)
    return CohortResult(records, trainer.failed)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
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
    args = p.parse_args(argv)
    try:
        check_trial_flags(args)  # every flag, before any work
        specs = specs_from_args(args)
        store = Store(args.store)
        mode = resolve_mode(args.wandb_mode)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for spec in specs:
        print(f"{spec.run_id}: training on {store}", flush=True)

    def show(tr: Trainer, metrics: dict[str, dict[str, float]]) -> None:
        for run_id, m in metrics.items():
            print(f"  {run_id}  epoch {m['epoch']:>3}/{specs[0].epochs}  loss {m['loss']:.4f}  "
                  f"train acc {100 * m['train_accuracy']:.2f}%  ({m['epoch_seconds']:.1f}s)",
                  flush=True)

    try:
        gpu.prepare_process(deterministic=any(s.deterministic for s in specs))  # before CUDA
        result = run_cohort(specs, store, device=args.device, data_root=args.data_dir,
                            cuda_graph=args.cuda_graph,
                            wandb=WandbConfig(mode=mode, project=args.wandb_project,
                                              dir=default_dir(store)), on_epoch=show)
    except TeacherMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for run_id, record in result.items():
        print(f"{run_id}: test accuracy {100 * record['test_accuracy']:.2f}% on "
              f"{record['n_test']} samples, {record['wall_seconds']:.1f}s; committed to {store}")
    for run_id, error in result.failed.items():
        print(f"FAILED {run_id}: {error}", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
