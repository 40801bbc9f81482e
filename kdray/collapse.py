"""Did a run learn at all? The collapse rule shared by the sweep's summary and the analysis.

A run has *collapsed* when its balanced test accuracy (the mean of its per-class accuracies)
is below ``chance + MARGIN * (1 - chance)``, chance = 1 / (number of test classes): below
19 % for 10 classes, 55 % for 2. A constant predictor sits exactly at chance, and it scores
EOD = DPD = 0, perfectly fair; ``docs/claims.md`` says why the margin is a tenth of the way
from chance to perfect and what the analysis does with such a run (names it and keeps it out
of every number).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

MARGIN = 0.1


def balanced_accuracy(per_class: Iterable[float | None] | Mapping[str, float | None]
                      ) -> tuple[float, int]:
    """(mean per-class accuracy, number of classes) over the classes that have test samples
    (``None`` or NaN entries, a class without any, are left out); a mapping's values count."""
    values = per_class.values() if isinstance(per_class, Mapping) else per_class
    acc = [float(a) for a in values if a is not None and math.isfinite(float(a))]
    return (sum(acc) / len(acc) if acc else math.nan), len(acc)


def chance_bar(n_classes: int) -> float:
    """The balanced accuracy below which a run of ``n_classes`` classes has collapsed."""
    chance = 1.0 / n_classes
    return chance + MARGIN * (1.0 - chance)


def collapse_reason(per_class: Iterable[float | None] | Mapping[str, float | None]) -> str:
    """Why a run with these per-class test accuracies (fractions) collapsed, or ``""``:
    ``"balanced accuracy 10.00 % < 19.00 % (chance 10.00 % + 0.1 x (1 - chance))"``."""
    acc, k = balanced_accuracy(per_class)
    if k < 2 or not acc < chance_bar(k):
        return ""
    return (f"balanced accuracy {100 * acc:.2f} % < {100 * chance_bar(k):.2f} % (chance "
            f"{100 / k:.2f} % + {MARGIN:g} x (1 - chance))")
