"""The paper's claims as data, each with a decision rule fixed before any reproduction run.

Every claim is judged on every experiment of the store that has its data: a (dataset,
study, teacher/student pair, alpha), and for the fairness claims each sensitive attribute.

=====  ======================================  ============================================
claim  statement (source)                      rule (``scipy.stats``; p <= 0.05, two-sided)
=====  ======================================  ============================================
C1     DS test accuracy above NDS (Table 2)    Welch t-test (``ttest_ind(equal_var=False)``)
                                               of the seed-level accuracy of every DS run
                                               with 1 <= T <= 10, pooled, against the NDS
                                               seeds; paper direction DS > NDS
C2     DS fairer than NDS (abstract, Tables    the same Welch test on seed-level EOD, and
       2, 3, 8, 9)                             separately DPD; paper direction DS < NDS
C3     EOD falls as T rises over 1-10          Spearman's ρ (``spearmanr``) between T and
       (Tables 2, 9; Figure 4)                 the seed-level EOD of every DS run with
                                               1 <= T <= 10; paper direction ρ < 0
C4     DPD falls as T rises over 1-10 (same)   the same on DPD; ρ < 0
C5     the trend reverses at T = 20-40         Spearman's ρ between T and the seed-level
       (Tables 8, 9; Section 4.2)              EOD (and DPD) of every DS run with T in
                                               {10, 20, 30, 40}; needs T = 10 and two of
                                               {20, 30, 40}; paper direction ρ > 0
C6     DS DPD at high T at or below the        Welch t-test of the seed-level DPD of the DS
       teacher's (abstract, Figure 4)          runs with T in {8, 9, 10}, pooled, against
                                               the teacher seeds; paper direction
                                               DS < teacher
C7     #SC rises with T (Figure 3)             Spearman's ρ between T and #SC over the
                                               temperatures 2 <= T <= 10 of the experiment
                                               (one value per T; needs >= 3 T); ρ > 0
C8     #TC falls with T (Figure 3)             the same on #TC; ρ < 0
=====  ======================================  ============================================

Verdict: ``reproduced`` (the paper's direction, p <= 0.05), ``contradicted`` (the opposite
direction, p <= 0.05) or ``inconclusive``, with the statistic (Welch's t, or ρ), the p-value
and n. The level is fixed at :data:`LEVEL` = 0.05, whatever the analysis's ``--level``.

- Data missing (no DS runs in the claim's temperatures, too few temperatures, no NDS or
  teacher runs, no #SC/#TC because too few seeds): ``not run``, with what is missing. The
  claim's paper experiments (``scope``: the experiments the paper states it on) that the
  store lacks are listed ``not run`` too, with an empty study.
- Degenerate data give ``inconclusive`` with the reason, never a crash or a spurious p:
  fewer than 3 values on a side (Welch) or in all (Spearman), all values equal, no spread
  within either side of a Welch test (scipy would say p = 0 from ±inf), a constant input to
  ``spearmanr`` (one temperature only, or all values equal). Within-side equality is judged
  with the class tests' tolerance (:data:`analysis.significance.ZERO_SPREAD`). NaN values
  (an undefined EOD) are left out before testing.

``in_paper``: whether the paper states the claim on this experiment (dataset, pair, alpha
0.8, the paper's attribute); the rules apply to every experiment with the data.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.groups import PairTable, pair_tables
from analysis.paper_results import paper_cells
from analysis.significance import ZERO_SPREAD

LEVEL = 0.05
T_1_10 = tuple(float(t) for t in range(1, 11))
T_2_10 = tuple(float(t) for t in range(2, 11))
TRIFEATURE = (("trifeature-shape", "resnet20", "lenet5"),
              ("trifeature-texture", "resnet20", "lenet5"))
CELEBA = (("celeba-smiling", "resnet50", "resnet18"),
          ("celeba-eyeglasses", "resnet50", "resnet18"))
HATEXPLAIN = (("hatexplain", "bert_base", "distilbert"),)
FIGURE_3 = (("cifar100", "resnet56", "resnet20"), ("imagenet", "resnet50", "resnet18"))
FIGURE_4 = (TRIFEATURE[0], CELEBA[0])


@dataclass(frozen=True)
class Claim:
    """One claim and its rule.

    ``test``: ``"welch"`` (DS runs pooled vs the ``reference`` role's seeds) or
    ``"spearman"`` (T vs the metric of every DS run, or per T when ``per_temperature``).
    ``direction``: the sign of the paper's effect (Welch: mean DS - mean reference; Spearman:
    ρ). ``temperatures``: the DS runs used; ``required``: temperatures that must be among
    them; ``min_temperatures``: how many distinct ones at least. ``scope``: the (dataset,
    teacher, student) experiments (alpha 0.8) the paper states the claim on.
    """

    id: str
    statement: str
    source: str
    metrics: tuple[str, ...]
    test: str
    direction: int
    temperatures: tuple[float, ...]
    scope: tuple[tuple[str, str, str], ...]
    reference: str = ""
    required: tuple[float, ...] = ()
    min_temperatures: int = 1
    per_temperature: bool = False

    @property
    def fairness(self) -> bool:
        return self.metrics[0] in ("eod", "dpd")

    @property
    def rule(self) -> str:
        temps = _temps(self.temperatures)
        if self.test == "welch":
            side = "<" if self.direction < 0 else ">"
            ref = ROLE_NAMES[self.reference]
            return (f"Welch t-test, seed-level {'/'.join(self.metrics)} of the DS runs with T in "
                    f"{temps} pooled vs the {ref} seeds; paper: DS {side} {ref}")
        sign = "<" if self.direction < 0 else ">"
        what = "one value per T" if self.per_temperature else "every DS run"
        needs = (f"; needs T = {_temps(self.required)} and >= {self.min_temperatures} T"
                 if self.required else f"; needs >= {self.min_temperatures} T"
                 if self.min_temperatures > 1 else "")
        return (f"Spearman's ρ of T vs {'/'.join(self.metrics)}, {what} with T in {temps}"
                f"{needs}; paper: ρ {sign} 0")


CLAIMS = (
    Claim("C1", "DS test accuracy above NDS", "Table 2", ("test_accuracy",), "welch", +1,
          T_1_10, FIGURE_4, reference="nds"),
    Claim("C2", "DS fairer than NDS", "abstract, Tables 2, 3, 8, 9", ("eod", "dpd"), "welch",
          -1, T_1_10, TRIFEATURE + CELEBA + HATEXPLAIN, reference="nds"),
    Claim("C3", "EOD falls as T rises over 1-10", "Tables 2, 9; Figure 4", ("eod",),
          "spearman", -1, T_1_10, TRIFEATURE + CELEBA[:1]),
    Claim("C4", "DPD falls as T rises over 1-10", "Tables 2, 9; Figure 4", ("dpd",),
          "spearman", -1, T_1_10, TRIFEATURE + CELEBA[:1]),
    Claim("C5", "the fairness trend reverses at T = 20-40", "Tables 8, 9; Section 4.2",
          ("eod", "dpd"), "spearman", +1, (10.0, 20.0, 30.0, 40.0), TRIFEATURE + CELEBA,
          required=(10.0,), min_temperatures=3),
    Claim("C6", "DS DPD at high T at or below the teacher's", "abstract, Figure 4", ("dpd",),
          "welch", -1, (8.0, 9.0, 10.0), FIGURE_4, reference="teacher"),
    Claim("C7", "#SC rises with T", "Figure 3", ("n_sc",), "spearman", +1, T_2_10, FIGURE_3,
          min_temperatures=3, per_temperature=True),
    Claim("C8", "#TC falls with T", "Figure 3", ("n_tc",), "spearman", -1, T_2_10, FIGURE_3,
          min_temperatures=3, per_temperature=True),
)

COLUMNS = ["claim", "statement", "source", "dataset", "study", "teacher_arch", "student_arch",
           "alpha", "attribute", "metric", "test", "temperatures", "n", "n_ref", "statistic",
           "pvalue", "verdict", "reason", "in_paper"]
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
SIGNIFICANCE = {"n_sc": "ds_vs_nds", "n_tc": "ds_vs_teacher"}
ROLE_NAMES = {"nds": "NDS", "teacher": "teacher"}


def _temps(ts: tuple[float, ...] | list[float]) -> str:
    ts = sorted(ts)
    if len(ts) > 2 and ts == [float(t) for t in range(int(ts[0]), int(ts[-1]) + 1)]:
        return f"{ts[0]:g}-{ts[-1]:g}"
    return "{" + ", ".join(f"{t:g}" for t in ts) + "}" if len(ts) > 1 else f"{ts[0]:g}"


def _flat(x: np.ndarray) -> bool:
    return bool(np.ptp(x) <= ZERO_SPREAD * max(1.0, float(np.max(np.abs(x)))))


def verdict(statistic: float, pvalue: float, direction: int) -> tuple[str, str]:
    """``(verdict, reason)`` of a finite test result under the paper's ``direction``."""
    if pvalue <= LEVEL and np.sign(statistic) == direction:
        return "reproduced", ""
    if pvalue <= LEVEL and np.sign(statistic) == -direction:
        return "contradicted", ""
    return "inconclusive", f"p > {LEVEL:g}"


def welch(ds: np.ndarray, ref: np.ndarray) -> tuple[float, float, str]:
    """(t, p, reason) of a two-sided Welch t-test of ``ds`` vs ``ref``; NaN and a reason
    instead of a test on degenerate input."""
    if len(ds) < 3 or len(ref) < 3:
        return math.nan, math.nan, f"n < 3 on a side ({len(ds)} vs {len(ref)})"
    if _flat(np.concatenate([ds, ref])):
        return math.nan, math.nan, "all values equal"
    if _flat(ds) and _flat(ref):
        return math.nan, math.nan, "no spread within either side"
    res = stats.ttest_ind(ds, ref, equal_var=False)
    return float(res.statistic), float(res.pvalue), ""


def spearman(t: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """(ρ, p, reason) of ``scipy.stats.spearmanr(t, y)``; NaN and a reason instead of a test
    on degenerate input."""
    if len(y) < 3:
        return math.nan, math.nan, f"n < 3 ({len(y)})"
    if _flat(t):
        return math.nan, math.nan, "constant input: one temperature"
    if _flat(y):
        return math.nan, math.nan, "constant input: all values equal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        res = stats.spearmanr(t, y)
    rho, p = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(rho) and math.isfinite(p)):
        return math.nan, math.nan, "undefined ρ"
    return rho, p, ""


class _Data:
    """Seed-level values of the store's runs, as the claims read them."""

    def __init__(self, runs: pd.DataFrame, fairness_runs: pd.DataFrame,
                 significance: pd.DataFrame) -> None:
        self.acc = dict(zip(runs["run_id"], 100.0 * runs["test_accuracy"]))
        self.fair = {(r, a): (100.0 * d, 100.0 * e) for r, a, d, e in zip(
            fairness_runs["run_id"], fairness_runs["attribute"], fairness_runs["dpd"],
            fairness_runs["eod"])}
        self.attributes = {r: set() for r in runs["run_id"]}
        for r, a in self.fair:
            self.attributes[r].add(a)
        self.sig = {(r.dataset, r.study, r.teacher_arch, r.student_arch, r.temperature,
                     r.alpha, r.comparison): r.n_significant for r in significance.itertuples()}

    def values(self, run_ids: tuple[str, ...], metric: str, attribute: str) -> np.ndarray:
        if metric == "test_accuracy":
            x = [self.acc[r] for r in run_ids]
        else:
            x = [self.fair.get((r, attribute), (math.nan,) * 2)[metric == "eod"]
                 for r in run_ids]
        x = np.asarray(x, float)
        return x[np.isfinite(x)]


def _missing(claim: Claim, temps: list[float]) -> str:
    """What the claim needs that the experiment's DS temperatures lack ("" for nothing)."""
    want = _temps(claim.temperatures)
    if not temps:
        return f"no DS runs with T in {want}"
    if not set(claim.required) <= set(temps) or len(temps) < claim.min_temperatures:
        need = (f"T = {_temps(claim.required)} and " if claim.required else "")
        return (f"needs {need}>= {claim.min_temperatures} temperatures in {want}; has "
                f"{_temps(temps)}")
    return ""


def _test(claim: Claim, t: PairTable, metric: str, attribute: str, data: _Data
          ) -> dict[str, Any]:
    """The test's fields of one claim on one experiment (and metric, attribute)."""
    exps = [e for e in t.experiments if e.temperature in claim.temperatures]
    temps = sorted(e.temperature for e in exps)
    out: dict[str, Any] = {"temperatures": _temps(temps) if temps else ""}
    missing = _missing(claim, temps)
    if not missing and claim.test == "welch":
        ref_runs = t.nds if claim.reference == "nds" else t.teacher
        ds = data.values(tuple(r for e in exps for r in e.ds), metric, attribute)
        ref = data.values(ref_runs, metric, attribute)
        if not len(ref):
            missing = f"no {ROLE_NAMES[claim.reference]} runs with {metric}"
        else:
            out.update(n=len(ds), n_ref=len(ref))
            out["statistic"], out["pvalue"], out["reason"] = welch(ds, ref)
    elif not missing:
        if claim.per_temperature:
            points = [(e.temperature, data.sig.get(
                (t.dataset, t.study, t.teacher_arch, t.student_arch, e.temperature, t.alpha,
                 SIGNIFICANCE[metric]))) for e in exps]
            points = [(x, y) for x, y in points if y is not None]
            if len(points) < claim.min_temperatures:
                missing = (f"needs {metric} at >= {claim.min_temperatures} temperatures in "
                           f"{_temps(claim.temperatures)}; tested at {len(points)} (too few "
                           "seeds elsewhere)")
        else:
            points = [(e.temperature, y) for e in exps
                      for y in data.values(e.ds, metric, attribute)]
        if not missing:
            x, y = (np.array(v, float) for v in zip(*points)) if points else ([], [])
            out["n"] = len(points)
            out["statistic"], out["pvalue"], out["reason"] = spearman(np.asarray(x),
                                                                      np.asarray(y))
    if missing:
        return {**out, "verdict": "not run", "reason": missing}
    if out["reason"]:
        return {**out, "verdict": "inconclusive"}
    out["verdict"], out["reason"] = verdict(out["statistic"], out["pvalue"], claim.direction)
    return out


def _paper_attributes() -> dict[str, set[str]]:
    cells = paper_cells()
    fair = cells[cells["attribute"] != ""]
    return {d: set(sub["attribute"]) for d, sub in fair.groupby("dataset")}


def _row(claim: Claim, experiment: tuple, attribute: str, metric: str, in_paper: bool,
         fields: dict[str, Any]) -> dict[str, Any]:
    dataset, study, teacher_arch, student_arch, alpha = experiment
    return {"claim": claim.id, "statement": claim.statement, "source": claim.source,
            "dataset": dataset, "study": study, "teacher_arch": teacher_arch,
            "student_arch": student_arch, "alpha": alpha, "attribute": attribute,
            "metric": metric, "test": claim.test, "in_paper": in_paper, **fields}


def judge(experiments: list, runs: pd.DataFrame, fairness_runs: pd.DataFrame,
          significance: pd.DataFrame) -> pd.DataFrame:
    """``paper_claims.csv``: every claim on every experiment of the store that it applies to
    (the fairness claims per sensitive attribute), then the claim's paper experiments that
    the store lacks, ``not run``. Columns :data:`COLUMNS`."""
    data = _Data(runs, fairness_runs, significance)
    paper_attrs = _paper_attributes()
    tables = pair_tables(experiments)
    rows = []
    for claim in CLAIMS:
        for t in tables:
            exp = (t.dataset, t.study, t.teacher_arch, t.student_arch, t.alpha)
            paper_exp = t.alpha == 0.8 and exp[:1] + exp[2:4] in claim.scope
            attrs = [""]
            if claim.fairness:
                ids = t.teacher + t.nds + tuple(r for e in t.experiments for r in e.ds)
                attrs = sorted(set().union(*(data.attributes[r] for r in ids)))
            for attribute in attrs:
                in_paper = paper_exp and (not attribute
                                          or attribute in paper_attrs.get(t.dataset, ()))
                for metric in claim.metrics:
                    rows.append(_row(claim, exp, attribute, metric, in_paper,
                                     _test(claim, t, metric, attribute, data)))
        have = {(t.dataset, t.teacher_arch, t.student_arch) for t in tables if t.alpha == 0.8}
        for dataset, teacher_arch, student_arch in claim.scope:
            if (dataset, teacher_arch, student_arch) in have:
                continue
            for attribute in (sorted(paper_attrs[dataset]) if claim.fairness else [""]):
                for metric in claim.metrics:
                    rows.append(_row(claim, (dataset, "", teacher_arch, student_arch, 0.8),
                                     attribute, metric, True,
                                     {"verdict": "not run", "reason": "not in the store"}))
    return pd.DataFrame(rows, columns=COLUMNS)
