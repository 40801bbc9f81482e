"""Every command-line flag checked before any work: a ``ValueError`` naming the flag, the value
and what was expected (``--temperatures: -1 is not > 0``). Shared by the sweep scripts'
command line (``kdray.sweep.cli``) and ``python -m kdray.trial``."""

from __future__ import annotations

import argparse
import math
import os


def check_flags(args: argparse.Namespace) -> None:
    """Every flag's value, before any work: a ValueError naming the flag, the value and what
    was expected (argparse itself rejects a missing or non-numeric value)."""
    from kdray.sweep.progress import check_interval, interval_from_env

    def fail(flag: str, value, expected: str) -> None:
        raise ValueError(f"{flag}: {value!r} is not {expected}")

    for flag, values, ok, expected in (
            ("--datasets", args.datasets, lambda v: bool(v.strip()), "a dataset name"),
            ("--temperatures", args.temperatures, lambda v: math.isfinite(v) and v > 0, "> 0"),
            ("--alphas", args.alphas, lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("--seeds", args.seeds, lambda v: v >= 0, "an integer >= 0")):
        if values is None:
            continue
        if not values:
            raise ValueError(f"{flag}: no value; expected at least one")
        for i, v in enumerate(values):
            if not ok(v):
                fail(flag, _plain(v), expected)
            if v in values[:i]:
                raise ValueError(f"{flag}: {_plain(v)!r} appears twice")
    for flag, value, ok, expected in (
            ("--epochs", args.epochs, lambda v: v >= 1, "an integer >= 1"),
            ("--max-failures", args.max_failures, lambda v: v >= 0, "an integer >= 0"),
            ("--max-concurrent", args.max_concurrent, lambda v: v >= 1, "an integer >= 1"),
            ("--level", args.level, lambda v: 0 < v < 1, "in (0, 1)"),
            ("--store", args.store, lambda v: bool(v.strip()), "a local path or s3://bucket/prefix"),
            ("--plan", args.plan, lambda v: bool(v.strip()), "a file path"),
            ("--data-dir", args.data_dir, lambda v: bool(v.strip()) and not os.path.isfile(v),
             "a directory"),
            ("--wandb-dir", args.wandb_dir, lambda v: bool(v.strip()) and not os.path.isfile(v),
             "a directory"),
            ("--wandb-project", args.wandb_project, lambda v: bool(v.strip()), "a W&B project name")):
        if value is not None and not ok(value):
            fail(flag, _plain(value), expected)
    if args.progress_interval is not None:
        check_interval(_plain(args.progress_interval), "--progress-interval")
    else:
        interval_from_env()  # a bad $KDRAY_PROGRESS_INTERVAL is named too


def check_trial_flags(args: argparse.Namespace) -> None:
    """``python -m kdray.trial``'s flags, before any work; a ValueError naming the flag."""
    import torch

    from kdray.data import DATASETS
    from kdray.models import MODELS

    def listed(v):
        return v if isinstance(v, (list, tuple)) else [v]

    for flag, name, ok, expected in (
            ("--store", "store", lambda v: bool(v.strip()), "a local path or s3://bucket/prefix"),
            ("--spec", "spec", os.path.isfile, "a JSON file"),
            ("--dataset", "dataset", lambda v: v in DATASETS, f"one of {sorted(DATASETS)}"),
            ("--arch", "arch", lambda v: v in MODELS, f"one of {sorted(MODELS)}"),
            ("--teacher-arch", "teacher_arch", lambda v: v in MODELS, f"one of {sorted(MODELS)}"),
            ("--seed", "seed", lambda v: v >= 0, "an integer >= 0"),
            ("--temperature", "temperature", lambda v: math.isfinite(v) and v > 0, "> 0"),
            ("--alpha", "alpha", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("--epochs", "epochs", lambda v: v >= 1, "an integer >= 1"),
            ("--batch-size", "batch_size", lambda v: v >= 1, "an integer >= 1"),
            ("--lr", "lr", lambda v: math.isfinite(v) and v > 0, "> 0"),
            ("--data", "data", lambda v: "=" in v and bool(v.partition("=")[0]), "KEY=VALUE"),
            ("--data-dir", "data_dir", lambda v: bool(v.strip()) and not os.path.isfile(v),
             "a directory"),
            ("--wandb-project", "wandb_project", lambda v: bool(v.strip()), "a W&B project name")):
        value = getattr(args, name, None)
        if value is None:
            continue
        values = listed(value)
        if not values:
            raise ValueError(f"{flag}: no value; expected at least one {expected}")
        for v in values:
            if not ok(v):  # the value as parsed (-2.0), as RunSpec's own messages show it
                raise ValueError(f"{flag}: {v!r} is not {expected}")
    device = getattr(args, "device", None)
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"--device: {device!r} is not a torch device (cpu, cuda, cuda:1)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device: {device!r} is not available on this machine (no CUDA)")


def _plain(v):
    """``1.0`` -> ``1``, so that a message shows the number as it was typed."""
    return int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) else v
