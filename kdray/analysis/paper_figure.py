"""The paper's values in the fairness figures (Figs. 4(b), 9(b)): beside kdray's DS points,
the paper's DS mean ± std at the same temperatures, and its teacher and NDS as dotted and
dashed lines in their own colour, wherever the paper has the cell
(``paper_comparison.csv``'s compared rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdray.analysis.groups import PairTable
from kdray.analysis.model import Reference, Series

COLOR = "C1"  # kdray's DS is C0
OFFSET = 0.15  # the paper's points sit this far right of kdray's (in T), so both show


def paper_overlay(comparison: pd.DataFrame, t: PairTable, attribute: str, metric: str
                  ) -> tuple[tuple[Series, ...], tuple[Reference, ...]]:
    """The paper's series and reference lines for one panel (empty where it has none)."""
    if comparison.empty:
        return (), ()
    c = comparison[(comparison["status"] == "compared") & (comparison["dataset"] == t.dataset)
                   & (comparison["study"] == t.study) & (comparison["metric"] == metric)
                   & (comparison["attribute"] == attribute)
                   & (comparison["teacher_arch"] == t.teacher_arch)
                   & (comparison["student_arch"] == t.student_arch)]
    ds = c[(c["role"] == "ds") & (c["alpha"] == t.alpha)].sort_values("temperature")
    series = (Series("paper DS", ds["temperature"].to_numpy(float) + OFFSET,
                     ds["paper_mean"].to_numpy(float),
                     err=ds["paper_std"].fillna(0).to_numpy(float), marker="s"),) if len(ds) else ()
    refs = []
    for role, label, dashed in (("teacher", "paper teacher", False), ("nds", "paper NDS", True)):
        y = c.loc[c["role"] == role, "paper_mean"]
        if len(y):
            refs.append(Reference(label, float(y.iloc[0]), dashed=dashed, dotted=not dashed,
                                  color=COLOR))
    return series, tuple(refs)
