"""The analysis job, a one-way pipeline: read -> statistics -> table model -> renderers.

::

    read.py        runs/*/predictions.parquet ──Ray Data, one task per run──► per-class counts,
                   fingerprints, DPD/EOD per attribute (+ run.json: accuracy, names)
    statistics.py  studies and checks ─► experiments ─► Welch tests, fairness means,
                   disagreement matrices (Ray Data, one task per comparison)
    tables.py      ─► the table model (model.py): every table, title and figure, built once;
                   paper_tables.py adds paper_comparison.md and the printed epilogue
    renderers      markdown.py (tables.md), outputs.py (CSV/Parquet/PNG, replacing the old
                   folder), figures.py (PNG), wandb_run.py (one W&B analysis run)

Each stage imports only the stages before it; nothing imports this module but the CLI.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

from kdray.analysis import markdown, paper_tables
from kdray.analysis.fairness import BACKENDS
from kdray.analysis.figures import render_all
from kdray.analysis.model import Report
from kdray.analysis.outputs import OutputFolder, write_report
from kdray.analysis.read import open_store, read_store
from kdray.analysis.significance import NORMALISATIONS
from kdray.analysis.statistics import Statistics, compute
from kdray.analysis.tables import build_report
from kdray.analysis.wandb_run import log_run


@dataclass(frozen=True)
class Options:
    """How to analyse and what to write.

    Parameters
    ----------
    level : significance level of the per-class Welch tests and of BH (default 0.05).
    normalisation : ``"ratio"`` (β^c/β^M, paper eq. 8) or ``"difference"`` (β^c - β^M).
    fairness_backend : ``fairlearn`` (MetricFrame, default) or ``numpy`` (bincount; same numbers).
    figures : render the PNG figures. write : write the output files (and the W&B run) at all.
    progress : show Ray Data progress bars.
    wandb_mode : ``online``, ``offline`` or ``disabled``; default ``$WANDB_MODE``, else
        offline without ``WANDB_API_KEY``, else online.
    wandb_project : the W&B project of the analysis run.
    wandb_dir : where W&B writes it; default ``$WANDB_DIR``, else where a sweep writes its
        runs (``kdray.connect.default_dir``: ``{store}/wandb`` for a local store).
    """

    level: float = 0.05
    normalisation: str = "ratio"
    fairness_backend: str = "fairlearn"
    figures: bool = True
    write: bool = True
    progress: bool = False
    wandb_mode: str | None = None
    wandb_project: str = "kdray"
    wandb_dir: str | None = None

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation: {self.normalisation!r} is not one of "
                             f"{NORMALISATIONS}")
        if not 0 < self.level < 1:
            raise ValueError(f"level: {self.level!r} is not in (0, 1)")
        if self.fairness_backend not in BACKENDS:
            raise ValueError(f"fairness backend: {self.fairness_backend!r} is not one of "
                             f"{BACKENDS}")


@dataclass
class AnalysisResult:
    """What one analysis computed (``stats``), its table model (``report``) and where it went.

    The statistics read directly: ``result.significance``, ``result.class_tests``,
    ``result.too_few_seeds``, ``result.fairness``, ``result.runs``, ``result.experiments``,
    ``result.unreferenced``, ``result.disagreement``, ``result.summary`` ... are
    ``result.stats``'s (:class:`~analysis.statistics.Statistics`).
    """

    stats: Statistics = field(repr=False)
    report: Report = field(repr=False)
    tables_md: str = field(repr=False)
    out: str
    pages: dict[str, str] = field(default_factory=dict, repr=False)
    epilogue: str = field(default="", repr=False)
    files: list[str] = field(default_factory=list)
    wandb_run_id: str | None = None
    seconds: float = 0.0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "stats":
            raise AttributeError(name)
        return getattr(self.stats, name)

    def print(self) -> None:
        print_tables(self)


def print_tables(result: AnalysisResult) -> None:
    """Print ``tables.md`` (the paper-style tables and the read/skip summary), then the
    short summary of ``paper_comparison.md`` (its cells and the claims' verdicts)."""
    print(result.tables_md, end="")
    print(result.epilogue, end="")


def run(store_uri: str, out_uri: str | None = None, options: Options | None = None,
        **overrides: Any) -> AnalysisResult:
    """Analyse every complete run in the store at ``store_uri``.

    Parameters
    ----------
    store_uri : local path or ``s3://bucket/prefix`` of a kdray store.
    out_uri : where to write; default ``{store}/analysis/``. Each run replaces it whole.
    options : :class:`Options`; ``overrides`` set single fields of it
        (``run(store, level=0.01, wandb_mode="disabled")``).

    Raises
    ------
    FileNotFoundError : the store does not exist.
    ValueError : a bad option, no complete runs, or runs of one study evaluated on
        different test samples (or with different attribute values or class names).
    """
    from kdray.connect import default_dir, resolve_mode

    t0 = time.perf_counter()
    opts = dataclasses.replace(options or Options(), **overrides)
    mode = resolve_mode(opts.wandb_mode)
    store = open_store(store_uri)
    folder = OutputFolder(store, out_uri)

    runs, per_run, summary = read_store(store, opts.fairness_backend, opts.progress)
    stats = compute(store, runs, per_run, summary, opts.level, opts.normalisation,
                    opts.progress)
    report = build_report(stats, opts.level, opts.normalisation, str(folder),
                          figures=opts.write and opts.figures)
    paper_tables.extend(report, stats)
    result = AnalysisResult(stats, report, markdown.render(report), str(folder),
                            pages={name: markdown.render_blocks(blocks)
                                   for name, blocks in report.pages.items()},
                            epilogue=markdown.render_blocks(report.epilogue))
    if opts.write:
        pngs = render_all(report.figures)
        result.files = write_report(report, result.tables_md, pngs, folder, result.pages)
        result.wandb_run_id = log_run(report, pngs, mode, opts.wandb_project, opts.wandb_dir
                                      or os.environ.get("WANDB_DIR") or default_dir(store))
    result.seconds = time.perf_counter() - t0
    return result
