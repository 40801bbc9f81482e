"""The command line every sweep script shares: ``Script(name, experiments, ...).main()``.

A sweep script names its experiments in a :class:`Script` and calls its ``main``; this
module gives it the common flags (``--store``, ``--dry-run``, ``--smoke-test``, axis filters and overrides, W&B,
resources), checks them and the store (``kdray/store_check.py``) before any work, runs the
two stages on Ray Tune, then the analysis job on the store (unless another driver still
trains some of its runs), prints the tables, and exits 1 if any run failed or was not
launched, 2 on bad input (a flag, the store, the analysis's input) with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from typing import Sequence

from kdray.cli_help import command_parser, explain
from kdray.store import Store
from kdray.store_check import check_store
from kdray.sweep import preflight
from kdray.sweep.flags import check_flags
from kdray.sweep.grid import Experiment, expand, narrow, parse_cohort_sizes
from kdray.sweep.options import SweepOptions


@dataclass(frozen=True)
class Script:
    """A sweep script: its experiments and how its command line reads.

    name : the script's path in the repository (``sweeps/quick.py``), its ``prog``.
    description : what ``--help`` prints first (the script's docstring).
    default_datasets : the datasets it runs when ``--datasets`` is not given (default: all of
        ``experiments``'); the others run when named.
    """

    name: str
    experiments: Sequence[Experiment]
    description: str = ""
    default_store: str = "./results"
    default_datasets: Sequence[str] | None = None

    def parser(self) -> argparse.ArgumentParser:
        return parser(self.description, self.default_store, prog=f"python {self.name}",
                      default_datasets=self.default_datasets)

    def main(self, argv: Sequence[str] | None = None) -> int:
        return sweep_main(self.experiments, argv, script=self)


def parser(description: str = "", default_store: str = "./results", *, prog: str | None = None,
           default_datasets: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The flags every sweep script shares, one line of help each (docs/cli.md lists them)."""
    p = command_parser(prog or f"python {os.path.basename(sys.argv[0])}", description,
                       epilog=None)
    p.add_argument("--store", default=default_store, metavar="URI",
                   help="path or s3:// URI")
    explain(p.add_argument("--shared-store", action="store_true",
                           help="every node mounts the local --store path"),
            "Without it a local store is refused on a cluster of more than one node "
            "(kdray/sweep/preflight.py).")
    explain(p.add_argument("--dry-run", action="store_true", help="print the plan; train nothing"),
            "Per experiment and stage: runs, complete, to run, GPU-hours; written to --plan.")
    p.add_argument("--plan", default="plan.json", metavar="FILE", help="where --dry-run writes")
    explain(p.add_argument("--smoke-test", action="store_true",
                           help="the same path on CPU, tiny data"),
            "Tiny data in each dataset's real format, 1 epoch, 2 seeds, 1 temperature, a "
            "temporary store unless --store is given.")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   default=list(default_datasets) if default_datasets else None,
                   help=f"only these (default: {' '.join(default_datasets or ['all'])})")
    explain(p.add_argument("--temperatures", nargs="+", type=float, metavar="T",
                           help="replace the temperature axis"),
            "E.g. 20 30 40 to extend a finished study: complete runs are skipped.")
    p.add_argument("--alphas", nargs="+", type=float, metavar="A", help="replace the alpha axis")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="replace the seed axis")
    explain(p.add_argument("--epochs", type=int, metavar="N", help="every run's epochs"),
            "Overrides the recipe's; its lr milestones scale with it.")
    explain(p.add_argument("--controls", action=argparse.BooleanOptionalAction, default=None,
                           help="train matched controls (default: the script's)"),
            "The control is the NDS at lr x (1 - alpha), weight decay / (1 - alpha), one per "
            "seed and alpha: the step a DS gives its CE term (docs/claims.md, C9).")
    _tracking_flags(p)
    _cluster_flags(p)
    explain(p.add_argument("--data-dir", metavar="DIR",
                           help="raw datasets (default: $KDRAY_DATA_DIR)"),
            "On every node; without it or $KDRAY_DATA_DIR, ~/.cache/kdray/data.")
    p.add_argument("--no-analysis", action="store_true", help="skip the analysis at the end")
    p.add_argument("--level", type=float, default=0.05, help="significance level")
    explain(p.add_argument("--progress-interval", type=float, metavar="S",
                           help="seconds between progress lines off a terminal"),
            "Default: $KDRAY_PROGRESS_INTERVAL, else 30.")
    return p


def _tracking_flags(p: argparse.ArgumentParser) -> None:
    explain(p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"],
                           metavar="MODE", help="online, offline or disabled (default: by key)"),
            "Default: $WANDB_MODE, else online with a W&B API key, else offline.")
    p.add_argument("--wandb-project", default="kdray", metavar="NAME", help="the W&B project")
    p.add_argument("--wandb-entity", default=None, metavar="NAME", help="the W&B entity")
    explain(p.add_argument("--wandb-dir", metavar="DIR", help="where W&B writes"),
            "Default: {store}/wandb for a local store, ./wandb otherwise.")


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    explain(p.add_argument("--resources", nargs="+", default=[], metavar="SPEC",
                           help="ARCH=cpu:N,gpu:F[,KIND:F] per trial"),
            "A trial's Ray resources per architecture, custom ones included, e.g. "
            "resnet20=cpu:2,gpu:0.5 or resnet18=gpu:1,gpu_large:1 (the node kind); defaults: "
            "the table in kdray/sweep/cluster.py.")
    explain(p.add_argument("--max-failures", type=int, default=2, metavar="N",
                           help="retries of a failing trial"),
            "Of a trial that fails by its own error (from its checkpoint); a trial lost with "
            "its node (spot preemption) is retried without limit.")
    explain(p.add_argument("--checkpoint-every-epochs", type=int, default=10, metavar="N",
                           help="checkpoint every N epochs"),
            "A trial's resume checkpoint every N epochs or M minutes, whichever comes first; "
            "metrics are reported every epoch (kdray/sweep/checkpoints.py).")
    p.add_argument("--checkpoint-every-minutes", type=float, default=15.0, metavar="M",
                   help="or every M minutes")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="most trials at once")
    explain(p.add_argument("--cuda-graph", choices=["auto", "off"], default="auto", metavar="MODE",
                           help="CUDA graphs: auto or off"),
            "auto: where a trial can (CUDA, data in memory, no micro-batches), eager where capture "
            "fails; off: eager everywhere. It reaches every trial on every node "
            "($KDRAY_CUDA_GRAPH set where the driver runs does not); run.json's cuda_graph says "
            "what each run did.")
    explain(p.add_argument("--cohort-size", nargs="+", default=[], metavar="N",
                           help="[FAMILY=]N: most DS per cohort trial"),
            "Distilled students sharing one teacher forward, for every model family or one "
            "(cnn, vit, bert, imagenet); defaults: COHORT_MAX in kdray/sweep/grid.py.")


def smoke_variant(experiments: Sequence[Experiment], data_root: str) -> list[Experiment]:
    """The same experiments on tiny data: every dataset's tiny real-format files are written
    under ``data_root``; 1 epoch, batch 16, seeds (0, 1), the first temperature and alpha."""
    from kdray.data import write_tiny

    names = sorted({d for e in experiments for d in e.datasets})
    options = {d: write_tiny(d, data_root) for d in names}
    tiny = narrow(experiments, recipe={"epochs": 1, "batch_size": 16}, data=options)
    return [e.replace(seeds=e.seeds[:2], temperatures=e.temperatures[:1], alphas=e.alphas[:1])
            for e in tiny]


INTERRUPTED = 130  # a sweep stopped by Ctrl-C, as a shell reports SIGINT


def sweep_main(experiments: Sequence[Experiment], argv: Sequence[str] | None = None, *,
               script: Script | None = None) -> int:
    """Parse flags, plan, run the sweep, run the analysis; returns the exit code (2 for bad
    input, with one line). ``script``: the command line's name, description and defaults
    (default: a script of these experiments, named by ``sys.argv[0]``)."""
    from kdray.sweep.driver import run_plan

    script = script or Script(os.path.basename(sys.argv[0]), experiments)
    default_store = script.default_store
    args = script.parser().parse_args(argv)
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
    if report.interrupted:
        print("analysis: not run (the sweep was interrupted)")
        return INTERRUPTED
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
                           shared_store=args.shared_store, cuda_graph=args.cuda_graph)
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
    (nothing ran), the last analysis's tables when no run changed since. 2 on bad input (an
    empty store, runs of one study that do not agree), with one line, as
    ``python -m kdray.analysis`` exits."""
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
        print(f"analysis: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    result.print()
    return 0
