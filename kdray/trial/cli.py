"""``python -m kdray.trial``: train one run or one cohort without Ray, from flags or spec files.

Every flag is checked before any work (a flag that sets a RunSpec field by that field's rule,
``kdray/checks.py``; ``--store`` by ``kdray/store_check.py``), and each run is leased while
it trains (``kdray/lease.py``): a run another live driver trains is refused. Several
``--temperatures``/``--alphas`` values (or several ``--specs`` files) make a cohort sharing one
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
from kdray.cli_help import command_parser, explain
from kdray.lease import RunningElsewhere, leased
from kdray.spec import RunSpec
from kdray.store import Store
from kdray.store_check import check_store
from kdray.training.loop import Trainer, check_cohort
from kdray.trial import teacher_logits
from kdray.trial.steps import CohortResult, TeacherMissingError, check_teacher


DESCRIPTION = """\
Train one run, or one cohort of DS runs sharing a teacher, without Ray, into a store.

    python -m kdray.trial --dataset digits --role teacher --arch resnet20 --epochs 2
    python -m kdray.trial --dataset digits --role ds --arch lenet5 --teacher-arch resnet20 \\
        --temperatures 2 4 8 --alphas 0.8        # a cohort: one teacher forward per batch
    python -m kdray.trial --store s3://bucket/study --specs spec.json

Every flag is checked before any work; a DS run's teacher must be complete in the store.
Exit status: 0, 1 when a run failed or is trained elsewhere, 2 on bad input (one line)."""


def parser() -> argparse.ArgumentParser:
    p = command_parser("python -m kdray.trial", DESCRIPTION)
    p.add_argument("--store", default="./results", metavar="URI", help="path or s3:// URI")
    explain(p.add_argument("--specs", "--spec", nargs="+", metavar="FILE",
                           help="RunSpec or run.json files"),
            "JSON files with a RunSpec (or a run.json); several make a cohort. Flags given "
            "with them override their fields.")
    p.add_argument("--dataset", metavar="NAME", help="the dataset (kdray/data/)")
    p.add_argument("--role", choices=["teacher", "nds", "control", "ds"], metavar="ROLE",
                   help="teacher, nds, control or ds")
    p.add_argument("--arch", metavar="NAME", help="the model (kdray/models/)")
    p.add_argument("--seeds", "--seed", nargs="+", type=int, metavar="S",
                   help="one seed: a cohort shares it")
    p.add_argument("--teacher-arch", metavar="NAME", help="a DS run's teacher")
    p.add_argument("--temperatures", "--temperature", type=float, nargs="+", metavar="T",
                   help="several: one cohort")
    p.add_argument("--alphas", "--alpha", type=float, nargs="+", metavar="A",
                   help="several: one cohort")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, metavar="N", help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--data", nargs="*", metavar="KEY=VALUE", help="dataset options, image_size=32")
    p.add_argument("--data-dir", metavar="DIR", help="raw datasets (default: $KDRAY_DATA_DIR)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false", default=None,
                   help="train eagerly ($KDRAY_CUDA_GRAPH=0)")
    explain(p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"],
                           metavar="MODE", help="online, offline, disabled (default: by key)"),
            "Default: $WANDB_MODE, else online with a W&B API key, else offline.")
    p.add_argument("--wandb-project", default="kdray", metavar="NAME", help="the W&B project")
    return p


# flag, its parsed name, the RunSpec field whose rule applies to each value
FIELD_FLAGS = (("--dataset", "dataset", "dataset"), ("--arch", "arch", "arch"),
               ("--teacher-arch", "teacher_arch", "teacher_arch"), ("--seeds", "seeds", "seed"),
               ("--temperatures", "temperatures", "temperature"), ("--alphas", "alphas", "alpha"),
               ("--epochs", "epochs", "epochs"), ("--batch-size", "batch_size", "batch_size"),
               ("--lr", "lr", "lr"))
OTHER_FLAGS = (
    ("--store", "store", lambda v: bool(v.strip()), "a local path or s3://bucket/prefix"),
    ("--specs", "specs", os.path.isfile, "a JSON file"),
    ("--data", "data", lambda v: "=" in v and bool(v.partition("=")[0]), "KEY=VALUE"),
    ("--data-dir", "data_dir", lambda v: bool(v.strip()) and not os.path.isfile(v), "a directory"),
    ("--wandb-project", "wandb_project", lambda v: bool(v.strip()), "a W&B project name"))


def check_flags(args: argparse.Namespace) -> None:
    """Every flag, before any work: a ValueError naming the flag, the value as parsed (-2.0,
    as RunSpec's own messages show it) and what was expected."""
    checks = [(flag, name, lambda v, f=field: valid(f, v), expected(field))
              for flag, name, field in FIELD_FLAGS]
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
    if len(getattr(args, "seeds", None) or []) > 1:
        raise ValueError(f"--seeds: {' '.join(map(str, args.seeds))}: one seed per command "
                         f"(the runs of a cohort share their teacher's seed)")
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
    if args.specs:
        return [(f"--specs {path}", spec_fields(path)) for path in args.specs]
    missing = [f"--{k.replace('_', '-')}" for k in ("dataset", "role", "arch")
               if getattr(args, k) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: required unless --specs FILE is given")
    return [("flags", {"dataset": args.dataset, "role": args.role, "arch": args.arch})]


def spec_fields(path: str) -> dict[str, Any]:
    """The RunSpec fields of a ``--specs`` file: a RunSpec object or a run.json (its ``spec``);
    a ``ValueError`` naming the file for anything else (not JSON, a list, ``null``, ...)."""
    try:
        d = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"--specs {path}: not a readable JSON file ({e})") from None
    d = d["spec"] if isinstance(d, dict) and "spec" in d else d  # a run.json works too
    if not isinstance(d, dict):
        raise ValueError(f"--specs {path}: {json_type(d)}, expected a RunSpec object "
                         f"(or a run.json with one under 'spec')")
    return d


def specs_from_args(args: argparse.Namespace) -> list[RunSpec]:
    """The runs the flags name: each ``--specs`` file, or the flags' spec; several
    ``--temperatures``/``--alphas`` values make one DS run per combination (a cohort)."""
    specs = []
    for where, d in _base_dicts(args):
        for key, value in _overrides(args).items():
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
        for t in args.temperatures or [d.get("temperature")]:
            for a in args.alphas or [d.get("alpha")]:
                try:
                    specs.append(RunSpec.from_dict({**d, "temperature": t, "alpha": a}))
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
    check_cohort(specs)
    return specs


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The RunSpec fields the flags set for every run (a spec file's values overridden)."""
    values = {k: getattr(args, k) for k in ("teacher_arch", "epochs", "batch_size", "lr")}
    values["seed"] = args.seeds[0] if args.seeds else None
    return {k: v for k, v in values.items() if v is not None}


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

