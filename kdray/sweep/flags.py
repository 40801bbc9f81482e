"""Every command-line flag of the sweep scripts checked before any work: a ``ValueError`` naming
the flag, the value and what was expected (``--temperatures: -1 is not > 0``). A flag that
sets a RunSpec field is checked by that field's rule (``kdray/checks.py``)."""

from __future__ import annotations

import argparse
import math
import os

from kdray.checks import expected, valid

# flag -> (its value in the parsed arguments, the RunSpec field whose rule applies to each value)
AXES = (("--temperatures", "temperatures", "temperature"), ("--alphas", "alphas", "alpha"),
        ("--seeds", "seeds", "seed"))


def check_flags(args: argparse.Namespace) -> None:
    """Every flag's value, before any work: a ValueError naming the flag, the value and what
    was expected (argparse itself rejects a missing or non-numeric value)."""
    from kdray.sweep.progress import check_interval, interval_from_env
    from kdray.trial import teacher_logits

    _check_axis("--datasets", args.datasets, lambda v: bool(v.strip()), "a dataset name")
    for flag, name, field in AXES:
        _check_axis(flag, getattr(args, name), lambda v, f=field: valid(f, v), expected(field))
    for flag, value, ok, wanted in (
            ("--epochs", args.epochs, lambda v: valid("epochs", v), expected("epochs")),
            ("--max-failures", args.max_failures, lambda v: v >= 0, "an integer >= 0"),
            ("--max-concurrent", args.max_concurrent, lambda v: v >= 1, "an integer >= 1"),
            ("--level", args.level, lambda v: 0 < v < 1, "in (0, 1)"),
            ("--store", args.store, lambda v: bool(v.strip()), "a local path or s3://bucket/prefix"),
            ("--plan", args.plan, lambda v: bool(v.strip()) and not os.path.isdir(v),
             "a file path"),
            ("--data-dir", args.data_dir, is_directory, "a directory"),
            ("--wandb-dir", args.wandb_dir, is_directory, "a directory"),
            ("--wandb-project", args.wandb_project, lambda v: bool(v.strip()), "a W&B project name")):
        if value is not None and not ok(value):
            raise ValueError(f"{flag}: {plain(value)!r} is not {wanted}")
    if args.progress_interval is not None:
        check_interval(plain(args.progress_interval), "--progress-interval")
    else:
        interval_from_env()  # a bad $KDRAY_PROGRESS_INTERVAL is named too
    teacher_logits.limit_mb()  # and a bad $KDRAY_TEACHER_LOGITS_MB


def _check_axis(flag: str, values, ok, wanted: str) -> None:
    """A flag that replaces an axis: at least one value, each valid, none twice."""
    if values is None:
        return
    if not values:
        raise ValueError(f"{flag}: no value; expected at least one")
    for i, v in enumerate(values):
        if not ok(v):
            raise ValueError(f"{flag}: {plain(v)!r} is not {wanted}")
        if v in values[:i]:
            raise ValueError(f"{flag}: {plain(v)!r} appears twice")


def is_directory(value: str) -> bool:
    """A usable directory flag: not blank, and not an existing file."""
    return bool(value.strip()) and not os.path.isfile(value)


def plain(v):
    """``1.0`` -> ``1``, so that a message shows the number as it was typed."""
    return int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) else v
