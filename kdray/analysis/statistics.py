"""The statistics stage: per-run summaries -> every number the tables show, as frames.

::

    read_store (runs table + per-run summaries)
      ─► studies, checks (one seed per group, same test samples, same attribute values,
         the same class names within a study)
      ─► collapsed runs named and set aside (kdray/collapse.py; docs/claims.md): every
         number below is computed from the other runs
      ─► experiments ─► class accuracies and Welch tests (significance.py), fairness means
         (fairness.py)
      ─► disagreement matrices (disagreement.py, one Ray Data task per comparison)
      ─► the paper's cells beside kdray's (paper_comparison.py), the paper's claims judged
         (claims.py, seed_tests.py, verdicts.py) and the trends' per-T shape
         (trend_shapes.py)

Nothing here formats, titles or writes anything (comparisons only get a file-name-safe
name): tables and titles are the table model's job (:mod:`kdray.analysis.tables`), and rendering
is the renderers'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from kdray.analysis import claims, groups, paper_comparison, trend_shapes
from kdray.analysis.bootstrap import INTERVAL_KEYS
from kdray.analysis.disagreement import run_comparisons
from kdray.analysis.fairness import fairness_table
from kdray.analysis.read import ReadSummary, attribute_difference
from kdray.analysis.significance import class_accuracy_table, significance_tables
from kdray.collapse import balanced_accuracy, collapse_reason
from kdray.store import Store

FAIRNESS_RUN_COLUMNS = ["run_id", "attribute", "dpd", "eod", "tpr_diff", "fpr_diff",
                        "n_classes", "n_undefined", *INTERVAL_KEYS]


@dataclass(frozen=True)
class Comparison:
    """One disagreement matrix (eq. 7): the teacher vs the NDS of a pair (``student="nds"``,
    once per pair) or vs the DS at one T and alpha (``student="ds"``)."""

    name: str
    experiment: groups.Experiment
    student: str
    classes: np.ndarray
    matrix: pd.DataFrame  # sparse: teacher_pred, student_pred, mean_count, n_seeds


@dataclass
class Statistics:
    """Everything the analysis computed. Frames carry a ``study`` column ("" for a dataset
    with one study); ``counts[run_id] = (classes, correct, total)`` per class. ``runs`` has
    every run read, with a ``collapsed`` column; ``collapsed`` lists those runs (with
    ``balanced_accuracy``, a fraction, and ``collapse_reason``), and the experiments (an
    experiment whose every DS run collapsed stays, with none) and every frame but ``runs``
    leave them out."""

    runs: pd.DataFrame
    experiments: list[groups.Experiment]
    class_accuracy: pd.DataFrame
    significance: pd.DataFrame
    class_tests: pd.DataFrame
    too_few_seeds: pd.DataFrame
    fairness: pd.DataFrame
    fairness_runs: pd.DataFrame
    comparisons: list[Comparison]
    names: dict[tuple[str, str], groups.Names]
    counts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    summary: ReadSummary
    collapsed: pd.DataFrame = field(default_factory=pd.DataFrame)
    paper_comparison: pd.DataFrame = field(default_factory=pd.DataFrame)  # paper_comparison.py
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)  # claims.py
    trend_shapes: pd.DataFrame = field(default_factory=pd.DataFrame)  # trend_shapes.py

    @property
    def disagreement(self) -> dict[str, pd.DataFrame]:
        """Comparison name -> its sparse matrix."""
        return {c.name: c.matrix for c in self.comparisons}

    @cached_property
    def collapsed_seeds(self) -> dict[tuple, tuple[int, ...]]:
        """Model key (:func:`kdray.analysis.groups.model_key`) -> the seeds whose run collapsed."""
        return collapsed_seeds(self.collapsed)

    @property
    def unreferenced(self) -> pd.DataFrame:
        """Teacher and NDS runs (that did not collapse) that no experiment compares with."""
        return groups.unreferenced(self.runs[~self.runs["collapsed"]], self.experiments)

    @property
    def studies(self) -> dict[tuple[str, str], str]:
        """(dataset, study label) -> study key, for the datasets with several studies."""
        several = self.runs[self.runs["study"] != ""]
        return {(d, label): key for d, label, key in several[["dataset", "study", "study_key"]]
                .drop_duplicates().itertuples(index=False)}

    @property
    def has_class_names(self) -> bool:
        """Some run recorded its class names (then the outputs get name columns)."""
        return any(n.classes for n in self.names.values())


def _comparisons(runs: pd.DataFrame, exps: list[groups.Experiment]
                 ) -> list[tuple[str, groups.Experiment, str, list]]:
    """(name, experiment, student, seed pairs) of every disagreement comparison."""
    seeds = dict(zip(runs["run_id"], runs["seed"]))
    sha = dict(zip(runs["run_id"], runs["predictions_sha256"]))
    out, seen = [], set()
    for e in exps:
        base = groups.slug(e.dataset, e.study, f"{e.teacher_arch}_vs_{e.student_arch}")
        todo = [] if e.family in seen else [(f"{base}_nds", "nds", e.nds)]
        seen.add(e.family)
        todo.append((f"{base}_ds_T{e.temperature:g}_a{e.alpha:g}", "ds", e.ds))
        for name, student, g_runs in todo:
            pairs = [(s, f, g, sha[f], sha[g])
                     for s, f, g in groups.seed_pairs(e.teacher, g_runs, seeds)]
            if pairs:
                out.append((name, e, student, pairs))
    return out


def collapsed_runs(runs: pd.DataFrame,
                   counts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Rows of ``runs`` that collapsed (:func:`kdray.collapse.collapse_reason` of their
    per-class test accuracy), with ``balanced_accuracy`` (a fraction) and
    ``collapse_reason``."""
    def per_class(rid: str) -> list[float]:
        _, correct, total = counts[rid]
        return [c / t for c, t in zip(np.asarray(correct), np.asarray(total)) if t > 0]

    out = runs.assign(balanced_accuracy=[balanced_accuracy(per_class(r))[0]
                                         for r in runs["run_id"]],
                      collapse_reason=[collapse_reason(per_class(r)) for r in runs["run_id"]])
    return out[out["collapse_reason"] != ""]


def collapsed_seeds(collapsed: pd.DataFrame) -> dict[tuple, tuple[int, ...]]:
    """Model key (:func:`kdray.analysis.groups.model_key`) -> the sorted seeds that collapsed."""
    out: dict[tuple, list[int]] = {}
    for r in collapsed.itertuples():
        key = groups.model_key(r.dataset, r.study, r.role, r.arch, r.teacher_arch,
                               r.temperature, r.alpha)
        out.setdefault(key, []).append(int(r.seed))
    return {k: tuple(sorted(set(v))) for k, v in out.items()}


def _checked(store: Store, runs: pd.DataFrame, per_run: dict[str, dict[str, Any]],
             summary: ReadSummary) -> tuple[pd.DataFrame, dict[tuple[str, str], groups.Names]]:
    """The runs with their studies, after the checks; the studies' names."""
    if runs.empty:
        raise ValueError(f"no complete runs in {summary.store}: " + "; ".join(
            [summary.counts()] + [s.strip() for s in summary.lines()[1:]]))
    runs = groups.share_references(runs)
    runs["study"] = groups.label_studies(runs)
    groups.check_unique_seeds(runs)
    groups.check_same_samples(runs, {r: per_run[r]["fingerprint"] for r in runs["run_id"]})
    sha = dict(zip(runs["run_id"], runs["predictions_sha256"]))
    groups.check_same_attributes(
        runs, {r: per_run[r]["attribute_fingerprints"] for r in runs["run_id"]},
        explain=lambda a, b, attr: attribute_difference(store, (a, sha[a]), (b, sha[b]), attr))
    names = groups.study_names(runs, {r: (per_run[r]["class_names"],
                                          per_run[r]["attribute_values"])
                                      for r in runs["run_id"]})
    return runs, names


def compute(store: Store, runs: pd.DataFrame, per_run: dict[str, dict[str, Any]],
            summary: ReadSummary, level: float, normalisation: str,
            progress: bool = False) -> Statistics:
    """Every statistic of the complete runs that :func:`kdray.analysis.read.read_store` returned;
    collapsed runs are named (``collapsed``) and left out of everything else.

    Raises
    ------
    ValueError : no complete runs; two runs of one group with the same seed; runs of one study
        on different test samples, with different attribute values or class names.
    """
    runs, names = _checked(store, runs, per_run, summary)
    counts = {r: (s["classes"], s["correct"], s["total"]) for r, s in per_run.items()}
    collapsed = collapsed_runs(runs, counts)
    runs = runs.assign(collapsed=runs["run_id"].isin(collapsed["run_id"]))
    kept = runs[~runs["collapsed"]]

    exps = groups.without(groups.experiments(runs), set(collapsed["run_id"]))
    sig, cls, few = significance_tables(exps, counts, level, normalisation)
    class_acc = class_accuracy_table(kept, counts)
    fair_runs = pd.DataFrame([{"run_id": r, **f} for r, s in sorted(per_run.items())
                              for f in s["fairness"]], columns=FAIRNESS_RUN_COLUMNS)
    fair = fairness_table(kept, fair_runs)

    todo = _comparisons(kept, exps)
    matrices = run_comparisons(store, [{"name": n, "pairs": p} for n, _, _, p in todo], progress)
    comps = [Comparison(n, e, student, counts[pairs[0][2]][0], matrices[n])
             for n, e, student, pairs in todo]
    stats = Statistics(runs=runs, experiments=exps, class_accuracy=class_acc,
                       significance=sig, class_tests=cls, too_few_seeds=few, fairness=fair,
                       fairness_runs=fair_runs, comparisons=comps, names=names, counts=counts,
                       summary=summary, collapsed=collapsed)
    data = claims.ClaimData(exps, runs, fair_runs, counts, stats.collapsed_seeds, level,
                            normalisation)
    stats.paper_comparison = paper_comparison.compare(runs, fair, sig, stats.collapsed_seeds)
    stats.claims = claims.judge(data)
    stats.trend_shapes = trend_shapes.trend_shapes(stats.claims, data, sig)
    return stats
