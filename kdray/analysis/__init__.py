"""The analysis job: a kdray store -> the paper's significance and fairness tables.

It depends only on the store's data contract (``docs/store.md``) and on RunSpec's field
names, so it runs on any store, written by a sweep or by a test::

    python -m kdray.analysis --store s3://bucket/study            # or a local path
    ray job submit -- python -m kdray.analysis --store s3://bucket/study

    >>> import analysis
    >>> result = analysis.run("./results")                   # writes ./results/analysis/
    >>> analysis.print_tables(result)

A one-way pipeline (see :mod:`kdray.analysis.job`): read (Ray Data, per run) -> statistics (pure
functions over frames) -> one table model (:class:`Report`) -> renderers (Markdown,
CSV/Parquet, figures, a W&B run) that only render it.

Public API: :func:`run` with :class:`Options`, :class:`AnalysisResult`, :func:`print_tables`,
:func:`unchanged_tables`, and the statistics it is built from: :func:`welch_tests`,
:func:`normalised_class_accuracy`, :func:`bh_adjust` (eq. 8), :func:`fairness_metrics`
(eqs. 1-4, Algorithm 1), :func:`disagreement_counts` (eq. 7).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use, so that a Ray worker importing analysis.read does
# not pay for scipy and matplotlib (PEP 562 module __getattr__).
_EXPORTS = {
    "run": "kdray.analysis.job", "Options": "kdray.analysis.job", "AnalysisResult": "kdray.analysis.job",
    "print_tables": "kdray.analysis.job", "unchanged_tables": "kdray.analysis.cache",
    "ReadSummary": "kdray.analysis.read", "Report": "kdray.analysis.model", "Statistics": "kdray.analysis.statistics",
    "welch_tests": "kdray.analysis.significance", "normalised_class_accuracy": "kdray.analysis.significance",
    "bh_adjust": "kdray.analysis.significance", "count_significant": "kdray.analysis.significance",
    "fairness_metrics": "kdray.analysis.fairness", "group_rates": "kdray.analysis.fairness",
    "disagreement_counts": "kdray.analysis.disagreement", "mean_disagreement": "kdray.analysis.disagreement",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kdray.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
