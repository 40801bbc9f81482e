"""The statistics, indexed the way the table model looks them up (each frame is scanned once).

An experiment's key is ``(dataset, study, teacher_arch, student_arch, temperature, alpha)``,
the columns that ``significance.csv`` and ``class_tests.parquet`` share with it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kdray.analysis.groups import Experiment
from kdray.analysis.statistics import Statistics

KEY = ["dataset", "study", "teacher_arch", "student_arch", "temperature", "alpha"]


def key(e: Experiment) -> tuple:
    return (e.dataset, e.study, e.teacher_arch, e.student_arch, e.temperature, e.alpha)


class StatsIndex:
    """Lookups over one :class:`~analysis.statistics.Statistics`."""

    def __init__(self, stats: Statistics) -> None:
        self.stats = stats
        self._acc = dict(zip(stats.runs["run_id"], 100.0 * stats.runs["test_accuracy"]))
        sig = stats.significance
        self._sig = {tuple(k): (int(n), int(n_bh)) for *k, n, n_bh in zip(
            *(sig[c] for c in KEY + ["comparison", "n_significant", "n_significant_bh"]))}
        cls = stats.class_tests
        self._cls = ({k: sub for k, sub in cls.groupby(KEY + ["comparison"], sort=False)}
                     if len(cls) else {})
        fair = stats.fairness
        self._fair = {k: sub for k, sub in fair.groupby(["dataset", "study"], sort=False)}
        every = stats.fairness_runs.merge(stats.runs[["run_id", "dataset", "study"]],
                                          on="run_id")  # collapsed runs too
        self._attributes = {k: sorted(sub["attribute"].unique())
                            for k, sub in every.groupby(["dataset", "study"], sort=False)}
        ds = stats.class_accuracy[stats.class_accuracy["role"] == "ds"]
        self._ds_cls = {k: sub for k, sub in ds.groupby(
            ["dataset", "study", "teacher_arch", "arch", "temperature", "alpha"], sort=False)}

    def accuracy(self, run_ids: tuple[str, ...]) -> tuple[float, float, int]:
        """Test accuracy in %: mean, sample std (ddof=1; NaN for one run) and number of runs."""
        acc = np.array([self._acc[r] for r in run_ids], float)
        return (float(acc.mean()) if len(acc) else math.nan,
                float(acc.std(ddof=1)) if len(acc) > 1 else math.nan, len(acc))

    def n_significant(self, e: Experiment, comparison: str) -> tuple[int, int] | None:
        """(#significant, #significant after BH) of a comparison; None when not tested."""
        return self._sig.get(key(e) + (comparison,))

    def class_tests(self, e: Experiment, comparison: str) -> pd.DataFrame:
        """The per-class rows of a comparison (empty when not tested)."""
        return self._cls.get(key(e) + (comparison,), self.stats.class_tests.iloc[:0])

    def ds_class_accuracy(self, e: Experiment) -> pd.DataFrame:
        """class_accuracy.csv's rows of an experiment's DS (one per class, in class order)."""
        return self._ds_cls[key(e)]

    def attributes(self, dataset: str, study: str) -> list[str]:
        """The sensitive attributes of one study's runs (collapsed ones too), sorted."""
        return self._attributes.get((dataset, study), [])

    def fairness(self, dataset: str, study: str) -> pd.DataFrame:
        """fairness.csv's rows of one study (empty without sensitive attributes)."""
        return self._fair.get((dataset, study), self.stats.fairness.iloc[:0])
