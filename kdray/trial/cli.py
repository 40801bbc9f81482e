"""``python -m kdray.trial``: train one run or one cohort without Ray, from flags or spec files.

Every flag is checked before any work (a flag that sets a RunSpec field by that field's rule,
``kdray/checks.py``; ``--store`` by ``kdray/store_check.py``), and each run is leased while
it trains (``kdray/lease.py``): a run another live driver trains is refused. Several
``--temperature``/``--alpha`` values (or several ``--spec`` files) make a cohort sharing one
teacher forward per batch. Each run logs to its own W&B run through the trial's epoch
callback (``kdray.tracking.Tracker``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from kdray import trial
from kdray.checks import expected, json_type, valid
from kdray.lease import RunningElsewhere, leased
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.store_check import check_store
from kdray.training.loop import Trainer, check_cohort
from kdray.trial import teacher_logits
from kdray.trial.steps import CohortResult, TeacherMissingError, check_teacher


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdray.trial", description=trial.__doc__.split("\n\n")[0])
    p.add_argument("--store", default="./results", help="local path or s3://bucket/prefix")
    p.add_argument("--spec", nargs="+", metavar="FILE",
                   help="JSON files with a RunSpec (or a run.json); several make a cohort")
    p.add_argument("--dataset")
    p.add_argument("--role", choices=["teacher", "nds", "control", "ds"])
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
    teacher_logits.limit_mb()  # a bad $KDRAY_TEACHER_LOGITS_MB is named before any work


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


def _base_dicts(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(where the fields came from, the fields) of each run the flags name."""
    if args.spec:
        return [(f"--spec {path}", spec_fields(path)) for path in args.spec]
    missing = [f"--{k.replace('_', '-')}" for k in ("dataset", "role", "arch")
               if getattr(args, k) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: required unless --spec FILE is given")
    return [("flags", {"dataset": args.dataset, "role": args.role, "arch": args.arch})]


def spec_fields(path: str) -> dict[str, Any]:
    """The RunSpec fields of a ``--spec`` file: a RunSpec object or a run.json (its ``spec``);
    a ``ValueError`` naming the file for anything else (not JSON, a list, ``null``, ...)."""
    try:
        d = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"--spec {path}: not a readable JSON file ({e})") from None
    d = d["spec"] if isinstance(d, dict) and "spec" in d else d  # a run.json works too
    if not isinstance(d, dict):
        raise ValueError(f"--spec {path}: {json_type(d)}, expected a RunSpec object "
                         f"(or a run.json with one under 'spec')")
    return d


def specs_from_args(args: argparse.Namespace) -> list[RunSpec]:
    """The runs the flags name: each ``--spec`` file, or the flags' spec; several
    ``--temperature``/``--alpha`` values make one DS run per combination (a cohort)."""
    specs = []
    for where, d in _base_dicts(args):
        for key in ("teacher_arch", "epochs", "batch_size", "lr", "seed"):
            value = getattr(args, key)
            if value is not None:
                d[key] = value
        if args.data:
            if not isinstance(d.get("data") or {}, dict):
                raise ValueError(f"{where}: data is {json_type(d['data'])}, expected an object")
            d["data"] = dict(d.get("data") or {})
        for item in args.data or []:
            if "=" not in item:
                raise ValueError(f"--data: {item!r} is not KEY=VALUE")
            key, value = item.split("=", 1)
            d["data"][key] = _parse_value(value)
        for t in args.temperature or [d.get("temperature")]:
            for a in args.alpha or [d.get("alpha")]:
                try:
                    specs.append(RunSpec.from_dict({**d, "temperature": t, "alpha": a}))
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
    check_cohort(specs)
    return specs


def main(argv: list[str] | None = None) -> int:
    """``python -m kdray.trial``: check the flags and the store, lease the runs, train the
    cohort, print each run's result; each run logs to its own W&B run
    (``kdray.tracking.Tracker``)."""
    from kdray.connect import resolve_mode

    args = parser().parse_args(argv)
    try:
        check_flags(args)  # every flag, before any work
        specs = specs_from_args(args)
        store = check_store(args.store)  # before any work
        mode = resolve_mode(args.wandb_mode)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for spec in specs:
        print(f"{spec.run_id}: training on {store}", flush=True)
    try:
        check_teacher(specs[0], store)
        with leased(store, [s.run_id for s in specs]):  # one trainer per run (kdray/lease.py)
            result, trackers = _train(specs, store, args, mode)
    except (TeacherMissingError, RunningElsewhere) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return _report(result, trackers, store)


def _train(specs: list[RunSpec], store: Store, args: argparse.Namespace,
           mode: str) -> tuple[CohortResult, dict]:
    """Train the cohort, each run logging to its W&B run; returns the result and the runs'
    trackers (closed with exit code 1 when training raised)."""
    from kdray.connect import default_dir
    from kdray.tracking import Tracker, WandbConfig
    from kdray.training import gpu

    gpu.prepare_process(deterministic=any(s.deterministic for s in specs))  # before CUDA
    wandb = WandbConfig(mode=mode, project=args.wandb_project, dir=default_dir(store))
    trackers = {s.run_id: Tracker(s, wandb) for s in specs}
    try:
        # the package's run_cohort (what a test replaces), not steps.py's
        result = trial.run_cohort(specs, store, device=args.device, data_root=args.data_dir,
                                  cuda_graph=args.cuda_graph,
                                  on_epoch=functools.partial(_show, trackers, specs[0].epochs))
    except BaseException:
        for tracker in trackers.values():
            tracker.finish(exit_code=1)
        raise
    return result, trackers


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

