"""The analysis job: a kdray store -> the paper's significance and fairness tables.

It depends only on the store's data contract (``docs/store.md``) and on RunSpec's field
names, so it runs on any store, written by a sweep or by a test::

    python -m analysis --store s3://bucket/study            # or a local path
    ray job submit -- python -m analysis --store s3://bucket/study

    >>> import analysis
    >>> result = analysis.run("./results")                   # writes ./results/analysis/
    >>> analysis.print_tables(result)

A one-way pipeline (see :mod:`analysis.job`): read (Ray Data, per run) -> statistics (pure
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
    "run": "analysis.job", "Options": "analysis.job", "AnalysisResult": "analysis.job",
    "print_tables": "analysis.job", "unchanged_tables": "analysis.cache",
    "ReadSummary": "analysis.read", "Report": "analysis.model", "Statistics": "analysis.statistics",
    "welch_tests": "analysis.significance", "normalised_class_accuracy": "analysis.significance",
    "bh_adjust": "analysis.significance", "count_significant": "analysis.significance",
    "fairness_metrics": "analysis.fairness", "group_rates": "analysis.fairness",
    "disagreement_counts": "analysis.disagreement", "mean_disagreement": "analysis.disagreement",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
