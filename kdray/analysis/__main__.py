"""``python -m kdray.analysis [--store URI] [--out URI]``: run the analysis job and print the tables.

Exit status 0 on success, 2 on bad input (a missing or empty store, a bad option, runs of
one study on different test samples, with different attribute values or class names), with
a one-line message and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from kdray.cli_help import command_parser, explain


DESCRIPTION = """\
Turn a kdray store into the paper's significance and fairness tables, and print them.

    python -m kdray.analysis                                # the store ./results
    python -m kdray.analysis --store s3://bucket/study --out ./analysis --no-figures

Exit status: 0, or 2 on bad input (a missing or empty store, a bad option, runs of one study
that do not agree) with a one-line message."""


def parser() -> argparse.ArgumentParser:
    p = command_parser("python -m kdray.analysis", DESCRIPTION)
    p.add_argument("--store", default="./results", metavar="URI", help="path or s3:// URI")
    p.add_argument("--out", default=None, metavar="URI", help="default: {store}/analysis/")
    p.add_argument("--level", type=float, default=0.05, help="significance level")
    explain(p.add_argument("--normalisation", choices=("ratio", "difference"), default="ratio",
                           help="class accuracy over the model's: ratio or difference"),
            "ratio = β^c/β^M (paper eq. 8), difference = β^c - β^M (Hooker et al.).")
    explain(p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"),
                           default=None, metavar="MODE",
                           help="online, offline, disabled (default: by key)"),
            "Default: $WANDB_MODE, else offline without WANDB_API_KEY, else online.")
    p.add_argument("--wandb-project", default="kdray", metavar="NAME", help="the W&B project")
    explain(p.add_argument("--wandb-dir", default=None, metavar="DIR",
                           help="where W&B writes (default: $WANDB_DIR, else the sweep's)"),
            "Where a sweep writes its runs: {store}/wandb for a local store, ./wandb otherwise.")
    p.add_argument("--fairness-backend", choices=("fairlearn", "numpy"), default="fairlearn",
                   help="group rates by fairlearn's MetricFrame or numpy")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="Ray Data progress bars (default: on a terminal)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from kdray.analysis.job import Options, print_tables, run
    from kdray.store_check import check_store

    try:
        options = Options(level=args.level, normalisation=args.normalisation,
                          wandb_mode=args.wandb_mode, wandb_project=args.wandb_project,
                          wandb_dir=args.wandb_dir and os.path.abspath(args.wandb_dir),
                          fairness_backend=args.fairness_backend, figures=not args.no_figures,
                          progress=sys.stderr.isatty() if args.progress is None
                          else args.progress)
        check_store(args.store, write=False)  # one line, quickly, for an unusable store
        result = run(args.store, args.out, options)
    except (ValueError, FileNotFoundError) as e:
        print(f"analysis: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print_tables(result)
    print(f"\nwrote {len(result.files)} file(s) to {result.out} in {result.seconds:.1f} s"
          + (f"; W&B run {result.wandb_run_id}" if result.wandb_run_id else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
