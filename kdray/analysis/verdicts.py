"""From test results to verdicts: one Holm correction per family, and the seeds for power.

A *family* is one study's (dataset and study label) rows of one kind: the paper's claims
(``in_paper``: the experiment, alpha and attribute the paper states the claim on) or kdray's
own rows beyond the paper's scope (``*``). Within a family the raw p-values of every row
that has one are adjusted with Holm's method
(``statsmodels.stats.multitest.multipletests(method="holm")``), and the verdict reads the
adjusted p at :data:`LEVEL`:

- ``reproduced``: p_holm <= 0.05 and the effect has the paper's sign;
- ``contradicted``: p_holm <= 0.05 and the opposite sign;
- ``inconclusive``: neither.

Rows already decided by the claims (``not run``, ``not testable here``, degenerate data and
collapsed runs, both ``inconclusive`` with their reason) keep their verdict; a row made
inconclusive by collapsed runs still counts in its family when it has a p (so the correction
does not depend on which runs died).

An inconclusive row with an effect (Cohen's d finite and nonzero) gets the seeds that effect
would need for 80 % power in a two-sided one-sample t-test at the family's level 0.05 / m,
m its family's size (Holm's first threshold), from ``statsmodels.stats.power.TTestPower``
(:func:`seeds_for_power`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from kdray.analysis.seed_tests import MIN_SEEDS

LEVEL = 0.05
POWER = 0.8
MAX_SEEDS = 10_000  # "more than this" beyond it
FAMILIES = ("paper", "kdray")
FAMILY_NAMES = {"paper": "the paper's claims",
                "kdray": "kdray's rows beyond the paper's scope (*)"}
UNDECIDED = ""  # the claims' verdict for a row the correction decides


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' ``multipletests``) of one family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, float)
    if not len(p):
        return p
    return multipletests(p, alpha=LEVEL, method="holm")[1]


def seeds_for_power(d: float, alpha: float, power: float = POWER) -> float:
    """Seeds a two-sided one-sample t-test at ``alpha`` needs for ``power`` when the true
    Cohen's d is ``d`` (rounded up, at least :data:`kdray.analysis.seed_tests.MIN_SEEDS`); NaN
    for no effect; ``inf`` beyond :data:`MAX_SEEDS`.

    The power is statsmodels' one-sided power at ``alpha / 2`` (``TTestPower``,
    ``alternative="larger"`` on |d|): the two-sided test's power less its far tail, a
    probability below ``alpha / 2``, which scipy's non-central t returns as NaN for large
    effects (and statsmodels' two-sided solver with it)."""
    from statsmodels.stats.power import TTestPower

    if not math.isfinite(d) or d == 0:
        return math.nan
    kw = dict(effect_size=abs(d), alpha=alpha / 2, alternative="larger")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' ConvergenceWarning: handled below
        if TTestPower().power(nobs=MIN_SEEDS, **kw) >= power:
            return float(MIN_SEEDS)  # the fewest seeds the rules test
        try:
            n = float(np.asarray(TTestPower().solve_power(nobs=None, power=power, **kw)).item())
        except (ValueError, RuntimeError):
            n = math.nan
    return float(math.ceil(n)) if math.isfinite(n) and n <= MAX_SEEDS else math.inf


def verdict(effect: float, p_holm: float, direction: int) -> tuple[str, str]:
    """``(verdict, reason)`` from the Holm-adjusted p and the sign of the effect."""
    if p_holm <= LEVEL and np.sign(effect) == direction:
        return "reproduced", ""
    if p_holm <= LEVEL and np.sign(effect) == -direction:
        return "contradicted", ""
    return "inconclusive", f"p Holm > {LEVEL:g}"


def decide(rows: pd.DataFrame, directions: dict[str | tuple[str, str], int]) -> pd.DataFrame:
    """``rows`` (the claims' rows; ``verdict`` :data:`UNDECIDED` where the correction
    decides) with ``family``, ``family_size``, ``pvalue_holm``, the verdicts and
    ``seeds_for_power`` filled in; ``directions``: (claim id, metric), or a claim id for
    all its metrics, -> the paper's sign."""
    rows = rows.copy()
    rows["family"] = np.where(rows["in_paper"].astype(bool), FAMILIES[0], FAMILIES[1])
    tested = np.isfinite(rows["pvalue"].astype(float)) & (rows["reason"] != "not in the store")
    rows["pvalue_holm"] = math.nan
    rows["family_size"] = 0
    for _, idx in rows.groupby(["dataset", "study", "family"], sort=False).groups.items():
        members = [i for i in idx if tested[i]]
        rows.loc[idx, "family_size"] = len(members)
        if members:
            rows.loc[members, "pvalue_holm"] = holm(rows.loc[members, "pvalue"].to_numpy(float))
    for i in rows.index[rows["verdict"] == UNDECIDED]:
        claim = rows.at[i, "claim"]
        sign = directions.get((claim, rows.at[i, "metric"] if "metric" in rows else None),
                              directions.get(claim))
        v, why = verdict(rows.at[i, "effect"], rows.at[i, "pvalue_holm"], sign)
        note = rows.at[i, "reason"] if isinstance(rows.at[i, "reason"], str) else ""
        rows.loc[i, ["verdict", "reason"]] = v, "; ".join(x for x in (note, why) if x)
    rows["seeds_for_power"] = [
        seeds_for_power(d, LEVEL / max(m, 1)) if v == "inconclusive" else math.nan
        for d, m, v in zip(rows["cohens_d"].astype(float), rows["family_size"], rows["verdict"])]
    return rows
