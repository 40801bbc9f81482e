"""How the paper-style fairness tables show sampling noise (table model, tables.md).

Beside the EOD and DPD columns (mean ± std over seeds), one ``noise`` column per metric and
attribute: the half-width of each run's bootstrap 95% interval over its test samples
(:mod:`kdray.analysis.bootstrap`), mean over the seeds (``fairness.csv``'s
``eod_ci95_halfwidth`` and ``dpd_ci95_halfwidth``). A seed-to-seed std well above it is a
difference between trainings; one of its size may be test-set noise alone.
"""

from __future__ import annotations

import math

import pandas as pd

from kdray.analysis.bootstrap import N_BOOT
from kdray.analysis.model import Text

METRICS = (("EOD", "eod"), ("DPD", "dpd"))

NOISE_NOTE = Text(("", f"noise: the half-width of each run's bootstrap 95% interval over its "
                   f"test samples ({N_BOOT} resamples), mean over seeds, in points of %."))


def noise_header(attributes: list[str]) -> list[str]:
    """The noise columns' headers, after every other column."""
    return [f"{label} {a} noise (%)" for a in attributes for label, _ in METRICS]


def noise_cells(rows: pd.DataFrame, attributes: list[str]) -> list[str]:
    """One model's noise cells (``rows``: its fairness.csv rows indexed by attribute)."""
    cells = []
    for a in attributes:
        for _, metric in METRICS:
            x = rows.loc[a, f"{metric}_ci95_halfwidth"] if a in rows.index else math.nan
            cells.append(f"±{x:.2f}" if math.isfinite(x) else "–")
    return cells
