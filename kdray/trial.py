"""One run: train a RunSpec, evaluate it on the test split, commit it to the store.

``run(spec, store)`` trains (a DS run first loads its teacher's weights from the store),
predicts every test sample, and writes ``predictions.parquet``, ``model.safetensors`` and,
last, ``run.json``. It returns the run's metrics. The same function runs in a test, a
benchmark, a GPU check with no cluster, or inside a Ray Tune trial (``kdray.sweep``), which
passes ``resume`` and ``on_epoch`` to checkpoint every epoch.

Command line::

    python -m kdray.trial --store ./results --dataset digits --role teacher --arch resnet20 --epochs 2
    python -m kdray.trial --store s3://bucket/study --spec spec.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import kdray
from kdray.data import DatasetSplits, load_dataset
from kdray.models import build_model
from kdray.spec import RunSpec
from kdray.store import Store, predictions_table
from kdray.tracking import Tracker, WandbConfig, default_dir, resolve_mode
from kdray.train import Trainer, per_class_accuracy


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
    teacher_id = spec.teacher_spec().run_id
    model = build_model(spec.teacher_arch, data.num_classes, pretrained=False, **data.model_kwargs())
    model.load_state_dict(store.read_model(teacher_id))
    return model


def code_version() -> str:
    """kdray's version plus the git commit of the checkout it runs from, when there is one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{kdray.__version__}+{commit}" if commit else kdray.__version__


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(spec: RunSpec, store: Store | str, *, device: str | None = None,
        data_root: str | os.PathLike | None = None, resume: dict[str, Any] | None = None,
        on_epoch: Callable[[Trainer, dict[str, float]], None] | None = None,
        wandb: WandbConfig | None = None, group: str | None = None,
        num_workers: int = 4) -> dict[str, Any]:
    """Train, evaluate and commit ``spec`` to ``store``; returns the metrics written to run.json.

    ``resume`` is a :meth:`Trainer.state_dict` to continue from; ``on_epoch(trainer, metrics)``
    runs after every epoch (the sweep checkpoints and reports there).
    """
    store = store if isinstance(store, Store) else Store(store)
    teacher_id = check_teacher(spec, store)  # before any work
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    data = load_data(spec, data_root)
    teacher = load_teacher(spec, store, data) if teacher_id else None
    trainer = Trainer(spec, data, device=device, teacher=teacher, num_workers=num_workers)
    if resume is not None:
        trainer.load_state_dict(resume)
    resumed_from = trainer.epoch
    tracker = Tracker(spec, wandb, group)
    history: list[dict[str, float]] = []

    def epoch_done(tr: Trainer, metrics: dict[str, float]) -> None:
        history.append(metrics)
        tracker.log_epoch(metrics)
        if on_epoch is not None:
            on_epoch(tr, metrics)

    try:
        trainer.fit(epoch_done)
        preds, labels = trainer.predict()
        n = len(labels)
        per_class = per_class_accuracy(labels, preds, data.num_classes)
        test_accuracy = float((preds == labels).mean()) if n else float("nan")
        table = predictions_table(spec.run_id, spec.to_dict(), np.arange(n), labels, preds,
                                  data.attributes)
        sha = store.write_predictions(spec.run_id, table)
        store.write_model(spec.run_id, trainer.model.state_dict(), {"run_id": spec.run_id})
        finished = dt.datetime.now(dt.timezone.utc)
        record = {
            "run_id": spec.run_id, "spec": spec.to_dict(), "teacher_run_id": teacher_id,
            "test_accuracy": test_accuracy, "per_class_accuracy": per_class,
            "per_class_n": np.bincount(labels, minlength=data.num_classes).tolist(),
            "n_test": n, "num_classes": data.num_classes,
            "attributes": sorted(data.attributes), "predictions_sha256": sha,
            "history": history, "resumed_from_epoch": resumed_from,
            "wall_seconds": time.perf_counter() - t0,
            "started": started.isoformat(), "finished": finished.isoformat(),
            "code_version": code_version(), "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "device": device_name(trainer.device), "host": platform.node(),
        }
        store.write_run_json(spec.run_id, record)  # the commit marker, last
        tracker.log_final(test_accuracy, per_class, record["per_class_n"])
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    return record


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    if args.spec:
        d = json.loads(Path(args.spec).read_text())
        d = d.get("spec", d)  # a run.json works too
    else:
        missing = [f"--{k}" for k in ("dataset", "role", "arch") if getattr(args, k) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required unless --spec FILE is given")
        d = {"dataset": args.dataset, "role": args.role, "arch": args.arch}
    for key in ("teacher_arch", "temperature", "alpha", "epochs", "batch_size", "lr"):
        value = getattr(args, key)
        if value is not None:
            d[key] = value
    if args.seed is not None:
        d["seed"] = args.seed
    options = dict(d.get("data") or {})
    for item in args.data or []:
        if "=" not in item:
            raise ValueError(f"--data: {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        options[key] = _parse_value(value)
    d["data"] = options
    return RunSpec.from_dict(d)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdray.trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="./results", help="local path or s3://bucket/prefix")
    p.add_argument("--spec", help="a JSON file with a RunSpec (or a run.json)")
    p.add_argument("--dataset")
    p.add_argument("--role", choices=["teacher", "nds", "ds"])
    p.add_argument("--arch")
    p.add_argument("--seed", type=int)
    p.add_argument("--teacher-arch", dest="teacher_arch")
    p.add_argument("--temperature", type=float)
    p.add_argument("--alpha", type=float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--data", nargs="*", metavar="KEY=VALUE", help="dataset options, e.g. image_size=32")
    p.add_argument("--data-dir", help="raw datasets on this node (default $KDRAY_DATA_DIR or ~/.cache/kdray/data)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"])
    p.add_argument("--wandb-project", default="kdray")
    args = p.parse_args(argv)
    try:
        spec = spec_from_args(args)
        store = Store(args.store)
        mode = resolve_mode(args.wandb_mode)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{spec.run_id}: training on {store}", flush=True)
    try:
        record = run(spec, store, device=args.device, data_root=args.data_dir,
                     wandb=WandbConfig(mode=mode, project=args.wandb_project, dir=default_dir(store)),
                     on_epoch=lambda tr, m: print(
                         f"  epoch {m['epoch']:>3}/{spec.epochs}  loss {m['loss']:.4f}  "
                         f"train acc {100 * m['train_accuracy']:.2f}%  ({m['epoch_seconds']:.1f}s)",
                         flush=True))
    except TeacherMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{spec.run_id}: test accuracy {100 * record['test_accuracy']:.2f}% on "
          f"{record['n_test']} samples, {record['wall_seconds']:.1f}s; committed to {store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
