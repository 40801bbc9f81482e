"""The command line every sweep script shares: ``sweep_main(experiments)``.

A sweep script names its experiments and calls ``sweep_main``; this module gives it the
common flags (``--store``, ``--dry-run``, ``--smoke-test``, axis filters and overrides, W&B,
resources), checks them and the store (``kdray/store_check.py``) before any work, runs the
two stages on Ray Tune, then the analysis job on the store (unless another driver still
trains some of its runs), prints the tables, and exits non-zero if any run failed or was not
launched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from typing import Sequence

from kdray.store import Store
from kdray.store_check import check_store
from kdray.sweep import preflight
from kdray.sweep.flags import check_flags
from kdray.sweep.grid import Experiment, expand, narrow, parse_cohort_sizes
from kdray.sweep.options import SweepOptions


def parser(description: str, default_store: str = "./results") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--store", default=default_store,
                   help="results store: a local path or s3://bucket/prefix")
    p.add_argument("--shared-store", action="store_true",
                   help="the local --store path is on storage that every node of the Ray "
                        "cluster mounts at that path (NFS, ...); without it a local store is "
                        "refused on a cluster of more than one node (kdray/sweep/preflight.py)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (per experiment and stage: runs, complete, to run, "
                        "GPU-hours) and write it to --plan; train nothing")
    p.add_argument("--plan", default="plan.json", help="where --dry-run writes the plan")
    p.add_argument("--smoke-test", action="store_true",
                   help="the same code path on CPU: tiny data in each dataset's real format, "
                        "1 epoch, 2 seeds, 1 temperature, a temporary store unless --store is given")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="only these datasets")
    p.add_argument("--temperatures", nargs="+", type=float, metavar="T",
                   help="replace the temperature axis (e.g. 20 30 40 to extend a finished study)")
    p.add_argument("--alphas", nargs="+", type=float, metavar="A", help="replace the alpha axis")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="replace the seed axis")
    p.add_argument("--epochs", type=int, help="override every run's epochs (milestones scale)")
    p.add_argument("--controls", action=argparse.BooleanOptionalAction, default=None,
                   help="train (or not) each NDS's matched control at every alpha: the NDS at "
                        "lr x (1 - alpha), weight decay / (1 - alpha) (default: the script's)")
    p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"],
                   help="default: $WANDB_MODE, else online with an API key, offline without")
    p.add_argument("--wandb-project", default="kdray")
    p.add_argument("--wandb-entity", default=None)
    p.add_argument("--wandb-dir", help="where W&B writes (default: {store}/wandb for a local store, ./wandb otherwise)")
    p.add_argument("--resources", nargs="+", default=[], metavar="ARCH=cpu:N,gpu:F[,KIND:F]",
                   help="per-architecture Ray resources, custom ones included, e.g. "
                        "resnet20=cpu:2,gpu:0.5 or resnet18=gpu:1,gpu_large:1 (the node kind; "
                        "defaults: the table in kdray/sweep/cluster.py)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a trial that fails by its own error (from its checkpoint); "
                        "a trial lost with its node (spot preemption) is retried without limit")
    p.add_argument("--checkpoint-every-epochs", type=int, default=10, metavar="N",
                   help="a trial's resume checkpoint every N epochs or M minutes, whichever "
                        "comes first (metrics are reported every epoch; kdray/sweep/checkpoints.py)")
    p.add_argument("--checkpoint-every-minutes", type=float, default=15.0, metavar="M",
                   help="see --checkpoint-every-epochs")
    p.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials")
    p.add_argument("--cohort-size", nargs="+", default=[], metavar="N|FAMILY=N",
                   help="most distilled students per cohort trial (they share one teacher "
                        "forward), for every model family or one (cnn, vit, bert, imagenet); "
                        "defaults in kdray/sweep/grid.py COHORT_MAX")
    p.add_argument("--data-dir", help="raw datasets on every node (default $KDRAY_DATA_DIR or ~/.cache/kdray/data)")
    p.add_argument("--no-analysis", action="store_true", help="skip the analysis job at the end")
    p.add_argument("--level", type=float, default=0.05, help="significance level of the analysis")
    p.add_argument("--progress-interval", type=float, metavar="SECONDS",
                   help="when stdout is not a terminal, seconds between progress lines "
                        "(default $KDRAY_PROGRESS_INTERVAL, else 30)")
    return p


def smoke_variant(experiments: Sequence[Experiment], data_root: str) -> list[Experiment]:
    """The same experiments on tiny data: every dataset's tiny real-format files are written
    under ``data_root``; 1 epoch, batch 16, seeds (0, 1), the first temperature and alpha."""
    from kdray.data import write_tiny

    names = sorted({d for e in experiments for d in e.datasets})
    options = {d: write_tiny(d, data_root) for d in names}
    tiny = narrow(experiments, recipe={"epochs": 1, "batch_size": 16}, data=options)
    return [e.replace(seeds=e.seeds[:2], temperatures=e.temperatures[:1], alphas=e.alphas[:1])
            for e in tiny]


def sweep_main(experiments: Sequence[Experiment], argv: Sequence[str] | None = None, *,
               description: str = "", default_store: str = "./results",
               default_datasets: Sequence[str] | None = None) -> int:
    """Parse flags, plan, run the sweep, run the analysis; returns the exit code.
    ``default_datasets``: the datasets it runs when ``--datasets`` is not given (default: all
    of ``experiments``'); the others run when named."""
    from kdray.sweep.driver import run_plan

    args = parser(description, default_store).parse_args(argv)
    if args.datasets is None and default_datasets:
        args.datasets = list(default_datasets)
    try:
        check_flags(args)  # every flag, before any work (and before Ray starts)
        exps, options = from_flags(args, experiments, default_store)
        plan = expand(exps)  # Experiments -> RunSpecs, once
        store = check_store(args.store, write=False)  # readable; nothing written yet
        options = replace(options, wandb=_wandb(args, store))
        if not args.dry_run:  # the cluster's workers joined; a store every node reaches,
            preflight.check(store, options)  # refused before anything is written to it
            check_store(args.store)  # and writable
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(plan, store, options.cohort_sizes, args.plan)
    print(f"store: {store}   W&B: {options.wandb.mode} ({args.wandb_project})", flush=True)
    report = run_plan(plan, store, options)
    print(report.format(), flush=True)
    code = 0 if report.ok else 1
    if args.no_analysis:
        return code
    if report.running_elsewhere:
        print(f"analysis: not run; {len(report.running_elsewhere)} run(s) are being trained by "
              f"another driver, whose sweep runs the analysis when it ends")
        return code
    return analyse(store, args.level, options.wandb, cached=not report.ran) or code


def from_flags(args: argparse.Namespace, experiments: Sequence[Experiment],
               default_store: str) -> tuple[list[Experiment], SweepOptions]:
    """The experiments the flags narrow or extend, and the :class:`SweepOptions` they set
    (W&B aside). ``--smoke-test`` writes tiny data and picks a temporary store."""
    from kdray.sweep.checkpoints import Cadence
    from kdray.sweep.cluster import parse_resource_overrides

    resources = parse_resource_overrides(args.resources)
    cadence = Cadence(args.checkpoint_every_epochs, args.checkpoint_every_minutes)
    cohort_sizes = parse_cohort_sizes(args.cohort_size)
    exps = list(experiments)
    if args.smoke_test:
        tmp = tempfile.mkdtemp(prefix="kdray-smoke-")
        if args.store == default_store:
            args.store = os.path.join(tmp, "store")
        args.data_dir = args.data_dir or os.path.join(tmp, "data")
        exps = smoke_variant(narrow(exps, datasets=args.datasets), args.data_dir)
        args.datasets = None
        # CPU only, one core per trial, whatever the architecture
        from kdray.models import MODELS
        resources = {a: {"cpu": 1, **resources.get(a, {})} for a in MODELS}
    exps = narrow(exps, datasets=args.datasets, temperatures=args.temperatures,
                  alphas=args.alphas, seeds=args.seeds, controls=args.controls,
                  recipe={"epochs": args.epochs} if args.epochs is not None else None)
    options = SweepOptions(resources=resources, cohort_sizes=cohort_sizes, cadence=cadence,
                           max_failures=args.max_failures, max_concurrent=args.max_concurrent,
                           data_dir=os.path.abspath(args.data_dir) if args.data_dir else None,
                           use_gpu=False if args.smoke_test else None,
                           progress_interval=args.progress_interval,
                           shared_store=args.shared_store)
    return exps, options


def _wandb(args: argparse.Namespace, store: Store):
    """The W&B settings of the flags (``--wandb-mode``, else ``$WANDB_MODE``, else by API key)."""
    from kdray.connect import default_dir, resolve_mode
    from kdray.tracking import WandbConfig

    return WandbConfig(mode=resolve_mode(args.wandb_mode), project=args.wandb_project,
                       entity=args.wandb_entity,
                       dir=os.path.abspath(args.wandb_dir or default_dir(store)))


def dry_run(plan, store: Store, cohort_sizes, path: str) -> int:
    """Print the plan and write it to ``path`` (``--plan``); train nothing."""
    from kdray.sweep.plan import format_plan, plan_json, plan_statuses

    status = plan_statuses(store, plan)  # teachers' weights verified, as the sweep does
    print(format_plan(plan, status, cohort_sizes))
    with open(path, "w") as f:
        json.dump(plan_json(plan, status, cohort_sizes), f, indent=1)
    print(f"plan: {len(plan)} runs written to {path}")
    return 0


def analyse(store: Store, level: float, wandb, cached: bool) -> int:
    """The analysis job on the store (``kdray/analysis/``): its tables printed; with ``cached``
    (nothing ran), the last analysis's tables when no run changed since. 1 on an error."""
    from kdray import analysis
    from kdray.sweep.progress import quiet_ray_hints

    quiet_ray_hints()  # Ray Data's progress-bar hint
    tables = analysis.unchanged_tables(store.uri, level=level) if cached else None
    if tables is not None:
        print(f"analysis: no run changed since the last analysis; its tables "
              f"({store}/analysis/tables.md):\n")
        print(tables, end="")
        return 0
    try:
        result = analysis.run(store.uri, level=level, wandb_mode=wandb.mode,
                              wandb_project=wandb.project, wandb_dir=wandb.dir)
    except (ValueError, FileNotFoundError) as e:  # e.g. nothing complete yet
        print(f"analysis: error: {e}", file=sys.stderr)
        return 1
    result.print()
    return 0
