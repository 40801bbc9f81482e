"""The shape of a trend: the per-T means with their intervals, beside every trend verdict.

One Spearman ρ says "falls" or "rises"; the means per T say how: a fall over T = 1-4 and a
rise after it, or a plateau, give a clear ρ too. For every trend row of the claims (C3-C5;
C7/C8 count per T) that was tested, :func:`trend_shapes` gives one row per temperature: the
mean over the seeds that did not collapse and its 95 % t interval
(:func:`kdray.analysis.seed_tests.mean_interval`); for #SC/#TC the count of ``significance.csv``
(no interval: it is one number per T).
"""

from __future__ import annotations

import math

import pandas as pd

from kdray.analysis.claims import CLAIMS, SIGNIFICANCE_OF, ClaimData, Values
from kdray.analysis.groups import pair_tables
from kdray.analysis.seed_tests import mean_interval

COLUMNS = ["claim", "dataset", "study", "teacher_arch", "student_arch", "alpha", "attribute",
           "metric", "temperature", "n", "mean", "low", "high"]
TRENDS = ("trend", "count_trend")
KEY = ["dataset", "study", "teacher_arch", "student_arch", "alpha"]


def _counts(significance: pd.DataFrame) -> dict[tuple, tuple[int, int]]:
    return {(r.dataset, r.study, r.teacher_arch, r.student_arch, r.alpha, r.comparison,
             r.temperature): (int(r.n_significant), int(r.n_seeds_ds))
            for r in significance.itertuples()}


def _cell(r, temperature: float, t, values: Values, counts: dict) -> tuple:
    """(mean, low, high, n) of one trend row at one temperature."""
    if r.test == "count_trend":
        key = tuple(getattr(r, k) for k in KEY) + (SIGNIFICANCE_OF[r.metric], temperature)
        n_sig, n = counts.get(key, (math.nan, 0))
        return n_sig, math.nan, math.nan, n
    e = next(e for e in t.experiments if e.temperature == temperature)  # no DS: NaN
    return mean_interval(list(values.by_seed(e.ds, r.metric, r.attribute).values()))


def trend_shapes(claims: pd.DataFrame, data: ClaimData, significance: pd.DataFrame
                 ) -> pd.DataFrame:
    """Per trend row of ``claims`` that was tested (any verdict but ``not run``) and each of
    its temperatures in the experiment: ``n`` seeds, ``mean``, ``low``, ``high`` (% or a
    count)."""
    values, counts = Values(data), _counts(significance)
    temps_of = {c.id: c.temperatures for c in CLAIMS}
    tables = {(t.dataset, t.study, t.teacher_arch, t.student_arch, t.alpha): t
              for t in pair_tables(data.experiments)}
    rows = []
    tested = claims[claims["test"].isin(TRENDS) & (claims["verdict"] != "not run")]
    for r in tested.itertuples():
        t = tables.get(tuple(getattr(r, k) for k in KEY))
        if t is None:  # every DS of the pair collapsed
            continue
        base = {"claim": r.claim, **{k: getattr(r, k) for k in KEY},
                "attribute": r.attribute, "metric": r.metric}
        for x in sorted({e.temperature for e in t.experiments} & set(temps_of[r.claim])):
            rows.append({**base, "temperature": x, **dict(zip(
                ("mean", "low", "high", "n"), _cell(r, x, t, values, counts)))})
    return pd.DataFrame(rows, columns=COLUMNS)
