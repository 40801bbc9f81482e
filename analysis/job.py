"""The analysis job: store -> per-run summaries (Ray Data) -> statistics (driver) -> outputs.

::

    runs/*/predictions.parquet ──Ray Data, one task per run──► per-class counts, fingerprint,
                                                                DPD/EOD per attribute
    driver: group into experiments ─► Welch tests (significance.py), fairness means (fairness.py)
    Ray Data, one task per comparison ─► disagreement matrices (disagreement.py)
    driver: significance.csv, class_tests.parquet, fairness.csv, disagreement/, tables.md,
            figures/ (+ one W&B analysis run)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import groups
from analysis.disagreement import run_comparisons
from analysis.fairness import BACKENDS, fairness_table
from analysis.read import ReadSummary, open_store, read_store
from analysis.report import format_tables, slug
from analysis.significance import NORMALISATIONS, significance_tables


@dataclass
class AnalysisResult:
    """Everything the job computed. DataFrames carry a ``study`` column ("" for a dataset with
    one study); the written files keep it only when some dataset has several."""

    runs: pd.DataFrame
    experiments: list[groups.Experiment]
    significance: pd.DataFrame
    class_tests: pd.DataFrame
    too_few_seeds: pd.DataFrame
    fairness: pd.DataFrame
    fairness_runs: pd.DataFrame
    disagreement: dict[str, pd.DataFrame]
    summary: ReadSummary
    level: float
    normalisation: str
    unreferenced: pd.DataFrame = field(default_factory=pd.DataFrame)
    studies: dict[tuple[str, str], str] = field(default_factory=dict)
    disagreement_classes: dict[str, np.ndarray] = field(default_factory=dict)
    disagreement_titles: dict[str, str] = field(default_factory=dict)
    out: str = ""
    files: list[str] = field(default_factory=list)
    wandb_run_id: str | None = None
    seconds: float = 0.0
    tables_md: str = ""

    def print(self) -> None:
        print_tables(self)


def print_tables(result: AnalysisResult) -> None:
    """Print ``tables.md`` (the paper-style tables and the read/skip summary)."""
    print(result.tables_md or format_tables(result), end="")


def _comparisons(runs: pd.DataFrame, exps: list[groups.Experiment]
                 ) -> tuple[list[dict[str, Any]], dict[str, tuple]]:
    """Disagreement comparisons (teacher vs NDS per pair, teacher vs DS per T and alpha)."""
    seeds = dict(zip(runs["run_id"], runs["seed"]))
    sha = dict(zip(runs["run_id"], runs["predictions_sha256"]))
    comps, meta, seen = [], {}, set()

    def add(name: str, f_runs, g_runs, title: str, first: str) -> None:
        pairs = [(s, f, g, sha[f], sha[g]) for s, f, g in groups.seed_pairs(f_runs, g_runs, seeds)]
        if pairs:
            comps.append({"name": name, "pairs": pairs})
            meta[name] = (title, first)

    for e in exps:
        base = slug(e.dataset, e.study, f"{e.teacher_arch}_vs_{e.student_arch}")
        if e.family not in seen:
            seen.add(e.family)
            add(f"{base}_nds", e.teacher, e.nds, f"{e.dataset}: teacher {e.teacher_arch} vs "
                f"NDS {e.student_arch}", e.nds[0] if e.nds else "")
        add(f"{base}_ds_T{e.temperature:g}_a{e.alpha:g}", e.teacher, e.ds,
            f"{e.dataset}: teacher {e.teacher_arch} vs DS {e.student_arch} "
            f"T={e.temperature:g} alpha={e.alpha:g}", e.ds[0])
    return comps, meta


def run(store_uri: str, out_uri: str | None = None, *, level: float = 0.05,
        normalisation: str = "ratio", wandb_mode: str | None = None,
        wandb_project: str = "kdray", fairness_backend: str = "fairlearn", figures: bool = True,
        write: bool = True, progress: bool = False) -> AnalysisResult:
    """Analyse every complete run in the store at ``store_uri``.

    Parameters
    ----------
    store_uri : local path or ``s3://bucket/prefix`` of a kdray store.
    out_uri : where to write; default ``{store}/analysis/``.
    level : significance level of the per-class Welch tests and of BH (default 0.05).
    normalisation : ``"ratio"`` (β^c/β^M, paper eq. 8) or ``"difference"`` (β^c - β^M).
    wandb_mode : ``online``, ``offline`` or ``disabled``; default ``$WANDB_MODE``, else
        offline without ``WANDB_API_KEY``, else online.
    fairness_backend : ``fairlearn`` (MetricFrame, default) or ``numpy`` (bincount; same numbers).
    figures : render the PNG figures. write : write the output files at all.
    progress : show Ray Data progress bars.

    Raises
    ------
    FileNotFoundError : the store does not exist.
    ValueError : a bad option, no complete runs, or runs of one study evaluated on
        different test samples.
    """
    from analysis.outputs import Output, log_wandb, write_outputs
    from kdray.tracking import resolve_mode

    t0 = time.perf_counter()
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation: {normalisation!r} is not one of {NORMALISATIONS}")
    if not 0 < level < 1:
        raise ValueError(f"level: {level!r} is not in (0, 1)")
    if fairness_backend not in BACKENDS:
        raise ValueError(f"fairness backend: {fairness_backend!r} is not one of {BACKENDS}")
    mode = resolve_mode(wandb_mode)
    store = open_store(store_uri)
    out = Output(store, out_uri)

    runs, per_run, summary = read_store(store, fairness_backend, progress)
    if runs.empty:
        raise ValueError(f"no complete runs in {summary.store}: " + "; ".join(
            [summary.counts()] + [s.strip() for s in summary.lines()[1:]]))
    runs["study"] = groups.label_studies(runs)
    studies = {(d, lab): key for d, lab, key in
               runs[runs["study"] != ""][["dataset", "study", "study_key"]]
               .drop_duplicates().itertuples(index=False)}
    groups.check_unique_seeds(runs)
    groups.check_same_samples(runs, {r: per_run[r]["fingerprint"] for r in runs["run_id"]})

    exps = groups.experiments(runs)
    counts = {r: (s["classes"], s["correct"], s["total"]) for r, s in per_run.items()}
    sig, cls, few = significance_tables(exps, counts, level, normalisation)
    fair_runs = pd.DataFrame([{"run_id": r, **f} for r, s in sorted(per_run.items())
                              for f in s["fairness"]],
                             columns=["run_id", "attribute", "dpd", "eod", "tpr_diff",
                                      "fpr_diff", "n_classes", "n_undefined"])
    fair = fairness_table(runs, fair_runs)

    comps, meta = _comparisons(runs, exps)
    dis = run_comparisons(store, comps, progress)

    result = AnalysisResult(
        runs=runs, experiments=exps, significance=sig, class_tests=cls, too_few_seeds=few,
        fairness=fair, fairness_runs=fair_runs, disagreement=dis, summary=summary, level=level,
        normalisation=normalisation, unreferenced=groups.unreferenced(runs, exps),
        studies=studies, out=str(out),
        disagreement_classes={n: counts[meta[n][1]][0] for n in dis},
        disagreement_titles={n: meta[n][0] for n in dis})
    result.tables_md = format_tables(result)
    if write:
        pngs = write_outputs(result, out, counts, figures)
        result.files = list(out.written)
        result.wandb_run_id = log_wandb(result, pngs, mode, wandb_project)
    result.seconds = time.perf_counter() - t0
    return result
