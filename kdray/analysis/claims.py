"""The paper's claims as data, each judged by the rules of ``docs/claims.md``.

Every claim is judged on every experiment of the store that has its data: a (dataset,
study, teacher/student pair, alpha), and for the fairness claims each sensitive attribute.
The seed is the unit (:mod:`kdray.analysis.seed_tests`); collapsed runs are already out of the
experiments (:mod:`kdray.collapse`); one Holm correction per family decides the verdicts
(:mod:`kdray.analysis.verdicts`).

=====  ======================================  ============================================
claim  statement (source)                      seed k's number; test; effect
=====  ======================================  ============================================
C1     DS test accuracy above NDS (Table 2)    mean accuracy of seed k's DS runs with
                                               1 <= T <= 10 minus its NDS; t-test across
                                               seeds; mean difference (points); paper +
C2     DS fairer than NDS (abstract, Tables    the same on EOD, and separately DPD;
       2, 3, 8, 9)                             paper -
C3     EOD falls as T rises over 1-10          Spearman's ρ of T vs EOD over seed k's DS
       (Tables 2, 9; Figure 4)                 runs with 1 <= T <= 10; t-test of the ρs;
                                               mean ρ; paper -
C4     DPD falls as T rises over 1-10 (same)   the same on DPD; paper -
C5     the trend reverses at T = 20-40         ρ of T vs EOD (and DPD) over T in {10, 20,
       (Tables 8, 9; Section 4.2)              30, 40}; needs T = 10 and 3 of them; paper +
C6     DS DPD at high T at or below the        mean DPD of seed k's DS runs with T in
       teacher's (abstract, Figure 4)          {8, 9, 10} minus its teacher's; paper -
C7     #SC rises with T (Figure 3)             no per-seed value: ρ of T vs #SC(T) over
                                               2 <= T <= 10 (>= 3 T), p by permuting T
                                               within seeds; paper +
C8     #TC falls with T (Figure 3)             the same on #TC; paper -
C9*    DS differs from its matched control     mean accuracy, EOD, DPD of seed k's DS runs
       (kdray's own: the NDS at lr x (1 -      with T in {8, 9, 10} minus its control at
       alpha), weight decay / (1 - alpha))     the same alpha; the sign the paper gives
                                               distillation: + accuracy, - EOD, - DPD
=====  ======================================  ============================================

Verdicts (:data:`VERDICTS`): ``reproduced``, ``contradicted``, ``inconclusive`` (with the
reason; ``collapsed runs: ...`` when a cell the row uses lost more than one seed),
``not testable here`` (C1, C2, C6 when the reference sits at the metric's floor or ceiling
in every seed) and ``not run`` (the data is missing; the claim's paper experiments that the
store lacks are listed ``not run`` too, with an empty study).

``in_paper``: whether the paper states the claim on this experiment (dataset, pair, alpha
0.8, the paper's attribute); it decides the row's family (paper or kdray's own, ``*``). C9
has no paper experiment: its rows are kdray's own, and exist only where the store has
controls at the experiment's alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from kdray.analysis import seed_tests, verdicts
from kdray.analysis.groups import Experiment, PairTable, model_key, pair_tables
from kdray.analysis.paper_results import paper_cells
from kdray.analysis.seed_tests import SeedTest
from kdray.analysis.significance import normalised_class_accuracy

T_1_10 = tuple(float(t) for t in range(1, 11))
T_2_10 = tuple(float(t) for t in range(2, 11))
TRIFEATURE = (("trifeature-shape", "resnet20", "lenet5"),
              ("trifeature-texture", "resnet20", "lenet5"))
CELEBA = (("celeba-smiling", "resnet50", "resnet18"),
          ("celeba-eyeglasses", "resnet50", "resnet18"))
HATEXPLAIN = (("hatexplain", "bert_base", "distilbert"),)
FIGURE_3 = (("cifar100", "resnet56", "resnet20"), ("imagenet", "resnet50", "resnet18"))
FIGURE_4 = (TRIFEATURE[0], CELEBA[0])
ROLE_NAMES = {"nds": "NDS", "teacher": "teacher", "control": "control"}
COUNT_REFERENCE = {"n_sc": "nds", "n_tc": "teacher"}
SIGNIFICANCE_OF = {"n_sc": "ds_vs_nds", "n_tc": "ds_vs_teacher"}  # significance.csv
UNITS = {"test_accuracy": "accuracy points", "eod": "EOD points", "dpd": "DPD points"}
# the metric's bound, and the paper's sign for which the reference at it leaves no room
BOUNDS = {"eod": (0.0, -1, "floor"), "dpd": (0.0, -1, "floor"),
          "test_accuracy": (100.0, +1, "ceiling")}
AT_BOUND = 1e-9  # points of %
MAX_COLLAPSED = 1  # collapsed seeds a cell may lose before its claim rows are inconclusive


@dataclass(frozen=True)
class Claim:
    """One claim and its rule.

    ``test``: ``"paired"`` (per seed, the DS minus the ``reference`` role), ``"trend"`` (per
    seed, ρ of T vs the metric) or ``"count_trend"`` (ρ of T vs #SC/#TC, permuted within
    seeds). ``direction``: the paper's sign of the effect. ``temperatures``: the DS runs
    used; ``required``: temperatures that must be among them; ``min_temperatures``: how many
    distinct ones at least. ``scope``: the (dataset, teacher, student) experiments (alpha
    0.8) the paper states the claim on. ``signs``: a metric's own sign where it is not
    ``direction`` (C9: fairer is lower EOD and DPD, more accurate higher accuracy).
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
    signs: tuple[tuple[str, int], ...] = ()

    @property
    def fairness(self) -> bool:
        return self.metrics[0] in ("eod", "dpd")

    def sign(self, metric: str) -> int:
        """The paper's sign of the effect on ``metric``."""
        return dict(self.signs).get(metric, self.direction)

    @property
    def rule(self) -> str:
        temps, sign = _temps(self.temperatures), "<" if self.direction < 0 else ">"
        what = "/".join(self.metrics)
        if self.test == "paired":
            ref = ROLE_NAMES[self.reference]
            signs = "; ".join(f"{m} DS {'<' if self.sign(m) < 0 else '>'} {ref}"
                              for m in self.metrics) if self.signs else f"DS {sign} {ref}"
            return (f"per seed: mean {what} of its DS runs with T in {temps} minus its {ref}"
                    f"{' (same alpha)' if self.reference == 'control' else ''}; t-test across "
                    f"seeds; paper{' (distillation)' if self.signs else ''}: {signs}")
        needs = (f"; needs T = {_temps(self.required)} and >= {self.min_temperatures} T"
                 if self.required else f"; needs >= {self.min_temperatures} T"
                 if self.min_temperatures > 1 else "")
        if self.test == "count_trend":
            return (f"Spearman's ρ of T vs {what} (one count per T) with T in {temps}{needs}; "
                    f"p: T permuted within seeds; paper: ρ {sign} 0")
        return (f"per seed: Spearman's ρ of T vs {what} over its DS runs with T in {temps}"
                f"{needs}; t-test of the ρs across seeds; paper: ρ {sign} 0")


CLAIMS = (
    Claim("C1", "DS test accuracy above NDS", "Table 2", ("test_accuracy",), "paired", +1,
          T_1_10, FIGURE_4, reference="nds"),
    Claim("C2", "DS fairer than NDS", "abstract, Tables 2, 3, 8, 9", ("eod", "dpd"), "paired",
          -1, T_1_10, TRIFEATURE + CELEBA + HATEXPLAIN, reference="nds"),
    Claim("C3", "EOD falls as T rises over 1-10", "Tables 2, 9; Figure 4", ("eod",),
          "trend", -1, T_1_10, TRIFEATURE + CELEBA[:1], min_temperatures=3),
    Claim("C4", "DPD falls as T rises over 1-10", "Tables 2, 9; Figure 4", ("dpd",),
          "trend", -1, T_1_10, TRIFEATURE + CELEBA[:1], min_temperatures=3),
    Claim("C5", "the fairness trend reverses at T = 20-40", "Tables 8, 9; Section 4.2",
          ("eod", "dpd"), "trend", +1, (10.0, 20.0, 30.0, 40.0), TRIFEATURE + CELEBA,
          required=(10.0,), min_temperatures=3),
    Claim("C6", "DS DPD at high T at or below the teacher's", "abstract, Figure 4", ("dpd",),
          "paired", -1, (8.0, 9.0, 10.0), FIGURE_4, reference="teacher"),
    Claim("C7", "#SC rises with T", "Figure 3", ("n_sc",), "count_trend", +1, T_2_10,
          FIGURE_3, min_temperatures=3),
    Claim("C8", "#TC falls with T", "Figure 3", ("n_tc",), "count_trend", -1, T_2_10,
          FIGURE_3, min_temperatures=3),
    # kdray's own: no paper experiment (scope), its rows where the store has controls
    Claim("C9", "DS differs from its matched control", "kdray's own (docs/claims.md)",
          ("test_accuracy", "eod", "dpd"), "paired", +1, (8.0, 9.0, 10.0), (),
          reference="control", signs=(("eod", -1), ("dpd", -1))),
)
DIRECTIONS = {(c.id, m): c.sign(m) for c in CLAIMS for m in c.metrics}
CONTROL_CLAIM = "C9"

COLUMNS = ["claim", "statement", "source", "dataset", "study", "teacher_arch", "student_arch",
           "alpha", "attribute", "metric", "test", "temperatures", "n", "n_ref", "n_collapsed",
           "statistic", "pvalue", "family", "family_size", "pvalue_holm", "effect",
           "effect_low", "effect_high", "effect_unit", "cohens_d", "seeds_for_power",
           "verdict", "reason", "in_paper"]
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not testable here", "not run")
COLLAPSED = "collapsed runs"


def _temps(ts: tuple[float, ...] | list[float]) -> str:
    ts = sorted(ts)
    if len(ts) > 2 and ts == [float(t) for t in range(int(ts[0]), int(ts[-1]) + 1)]:
        return f"{ts[0]:g}-{ts[-1]:g}"
    return "{" + ", ".join(f"{t:g}" for t in ts) + "}" if len(ts) > 1 else f"{ts[0]:g}"


@dataclass(frozen=True)
class ClaimData:
    """What the claims read. ``experiments``: built from the runs that did not collapse;
    ``runs``: every run (``run_id``, ``seed``, ``test_accuracy`` as a fraction);
    ``fairness_runs``: DPD and EOD (fractions) per run and attribute; ``counts``: per run
    ``(classes, correct, total)``; ``collapsed``: model key
    (:func:`kdray.analysis.groups.model_key`) -> the seeds whose run collapsed; ``level`` and
    ``normalisation``: those of the class tests that #SC and #TC count."""

    experiments: list[Experiment]
    runs: pd.DataFrame
    fairness_runs: pd.DataFrame
    counts: Mapping[str, tuple] = field(default_factory=dict)
    collapsed: Mapping[tuple, tuple[int, ...]] = field(default_factory=dict)
    level: float = 0.05
    normalisation: str = "ratio"


class Values:
    """Seed-level values of the store's runs, as the claims read them (% for metrics)."""

    def __init__(self, data: ClaimData) -> None:
        self.data = data
        self.seed = dict(zip(data.runs["run_id"], data.runs["seed"].astype(int)))
        self.acc = dict(zip(data.runs["run_id"], 100.0 * data.runs["test_accuracy"]))
        f = data.fairness_runs
        self.fair = {(r, a): (100.0 * d, 100.0 * e)
                     for r, a, d, e in zip(f["run_id"], f["attribute"], f["dpd"], f["eod"])}
        self.attributes: dict[str, set[str]] = {}
        for r, a in self.fair:
            self.attributes.setdefault(r, set()).add(a)
        self.study_attributes: dict[tuple[str, str], set[str]] = {}  # collapsed runs too
        if {"dataset", "study"} <= set(data.runs.columns):
            for r, d, st in zip(data.runs["run_id"], data.runs["dataset"], data.runs["study"]):
                self.study_attributes.setdefault((d, st), set()).update(
                    self.attributes.get(r, ()))

    def value(self, run_id: str, metric: str, attribute: str) -> float:
        if metric == "test_accuracy":
            return float(self.acc[run_id])
        return float(self.fair.get((run_id, attribute), (math.nan,) * 2)[metric == "eod"])

    def by_seed(self, run_ids: tuple[str, ...], metric: str, attribute: str
                ) -> dict[int, float]:
        return {self.seed[r]: self.value(r, metric, attribute) for r in run_ids}

    def norm_acc(self, run_id: str) -> np.ndarray:
        _, correct, total = self.data.counts[run_id]
        return normalised_class_accuracy(correct, total, self.data.normalisation)[0]


# -- one claim on one experiment -------------------------------------------------------------
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


def _fields(test: SeedTest, unit: str) -> dict[str, Any]:
    return {"n": test.n, "statistic": test.statistic, "pvalue": test.pvalue,
            "effect": test.effect, "effect_low": test.low, "effect_high": test.high,
            "effect_unit": unit, "cohens_d": test.d, "reason": test.reason,
            "verdict": verdicts.UNDECIDED if math.isfinite(test.pvalue) else "inconclusive"}


def _at_bound(claim: Claim, metric: str, ref: dict[int, float], role: str) -> str:
    """Why the claim is not testable here ("" when it is): the reference sits at the
    metric's bound in every seed, on the side the paper's effect would need."""
    bound, side, name = BOUNDS.get(metric, (math.nan, 0, ""))
    x = np.array([v for v in ref.values() if math.isfinite(v)])
    if side != claim.sign(metric) or not len(x) or np.abs(x - bound).max() > AT_BOUND:
        return ""
    return (f"the {ROLE_NAMES[role]}'s {metric} is {bound:.2f} in every seed (the metric's "
            f"{name}): no DS can be {'below' if side < 0 else 'above'} it")


def _paired(claim: Claim, t: PairTable, metric: str, attribute: str, v: Values,
            exps: list[Experiment]) -> dict[str, Any]:
    """C1, C2, C6: per seed, the mean of its DS runs minus its reference; t-test."""
    ref = {s: y for s, y in v.by_seed(_reference_runs(t, claim.reference),
                                      metric, attribute).items() if math.isfinite(y)}
    if not ref:
        return {"verdict": "not run",
                "reason": f"no {ROLE_NAMES[claim.reference]} runs with {metric}"}
    ds: dict[int, list[float]] = {}
    for e in exps:
        for s, y in v.by_seed(e.ds, metric, attribute).items():
            ds.setdefault(s, []).append(y)
    out = {**_fields(seed_tests.t_across_seeds(seed_tests.paired_differences(ds, ref)),
                     UNITS[metric]), "n_ref": len(ref)}
    why = _at_bound(claim, metric, ref, claim.reference)
    if why:
        out.update(verdict="not testable here", reason=why, statistic=math.nan,
                   pvalue=math.nan)
    return out


def _reference_runs(t: PairTable, role: str) -> tuple[str, ...]:
    """The runs of a pair table's reference ``role``: its NDS, teacher or controls."""
    return {"nds": t.nds, "teacher": t.teacher, "control": t.control}[role]


def _trend(metric: str, attribute: str, v: Values, exps: list[Experiment]) -> dict[str, Any]:
    """C3-C5: per seed, Spearman's ρ of T vs the metric over its DS runs; t-test of the ρs."""
    points: dict[int, list[tuple[float, float]]] = {}
    for e in exps:
        for s, y in v.by_seed(e.ds, metric, attribute).items():
            points.setdefault(s, []).append((e.temperature, y))
    return _fields(seed_tests.t_across_seeds(seed_tests.seed_rhos(points)), "rho")


def _count_trend(t: PairTable, metric: str, v: Values, exps: list[Experiment]
                 ) -> dict[str, Any]:
    """C7, C8: ρ of T vs #SC (#TC), T permuted within the seeds that have every T."""
    ref = t.nds if COUNT_REFERENCE[metric] == "nds" else t.teacher
    by_seed = [{v.seed[r]: r for r in e.ds} for e in exps]
    seeds = sorted(set.intersection(*(set(b) for b in by_seed)))
    if not seeds or len(ref) < 2:
        return {"verdict": "inconclusive", "n": len(seeds), "n_ref": len(ref),
                "reason": f"{len(seeds)} seed(s) with a DS run at every T and {len(ref)} "
                          f"{ROLE_NAMES[COUNT_REFERENCE[metric]]} run(s)"}
    ds = np.stack([[v.norm_acc(b[s]) for b in by_seed] for s in seeds])
    test, _ = seed_tests.count_trend([e.temperature for e in exps], ds,
                                     np.stack([v.norm_acc(r) for r in ref]), v.data.level)
    return {**_fields(test, "rho"), "n_ref": len(ref)}


def _collapsed(claim: Claim, t: PairTable, metric: str, v: Values
               ) -> tuple[int, str, list[float]]:
    """(collapsed runs in the cells the row reads, the ``collapsed runs: ...`` reason when
    one of those cells lost more than :data:`MAX_COLLAPSED` seeds, else "", and the claim's
    temperatures with a collapsed DS run)."""
    role = claim.reference or COUNT_REFERENCE.get(metric, "")
    kept = {e.temperature: len(e.ds) for e in t.experiments}
    cells = [(f"DS T={x:g}", ("ds", t.student_arch, t.teacher_arch, x, t.alpha), kept.get(x, 0))
             for x in claim.temperatures]
    if role:
        arch = t.teacher_arch if role == "teacher" else t.student_arch
        alpha = t.alpha if role == "control" else None
        cells.insert(0, (ROLE_NAMES[role], (role, arch, None, None, alpha),
                         len(_reference_runs(t, role))))
    lost = [(label, len(v.data.collapsed.get(model_key(t.dataset, t.study, *key), ())), n)
            for label, key, n in cells]
    bad = [f"{label} {k} of {k + n} seeds" for label, k, n in lost if k > MAX_COLLAPSED]
    temps = [key[3] for (_, key, _), (_, k, _) in zip(cells, lost) if key[0] == "ds" and k]
    return (sum(k for _, k, _ in lost), f"{COLLAPSED}: " + "; ".join(bad) if bad else "",
            temps)


def _test(claim: Claim, t: PairTable, metric: str, attribute: str, v: Values
          ) -> dict[str, Any]:
    """The test's fields of one claim on one experiment (and metric, attribute)."""
    exps = [e for e in t.experiments if e.temperature in claim.temperatures and e.ds]
    temps = sorted(e.temperature for e in exps)
    n_collapsed, collapsed, lost_temps = _collapsed(claim, t, metric, v)
    out: dict[str, Any] = {"temperatures": _temps(temps) if temps else "",
                           "n_collapsed": n_collapsed}
    missing = _missing(claim, temps)
    if missing and _missing(claim, sorted(set(temps) | set(lost_temps))):
        return {**out, "verdict": "not run", "reason": missing}  # missing, collapse or not
    if missing:
        out.update(verdict="not run", reason=missing)
    elif claim.test == "paired":
        out.update(_paired(claim, t, metric, attribute, v, exps))
    elif claim.test == "trend":
        out.update(_trend(metric, attribute, v, exps))
    else:
        out.update(_count_trend(t, metric, v, exps))
    if collapsed and out["verdict"] not in ("not testable here",):
        out.update(verdict="inconclusive", reason=collapsed)
    return out


# -- every claim on every experiment -----------------------------------------------------------
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


def _attributes(t: PairTable, v: Values) -> list[str]:
    ids = t.teacher + t.nds + t.control + tuple(r for e in t.experiments for r in e.ds)
    return sorted(v.study_attributes.get((t.dataset, t.study), set()).union(
        *(v.attributes.get(r, set()) for r in ids)))


def _cells(claim: Claim, t: PairTable, v: Values) -> list[tuple[str, str]]:
    """(attribute, metric) of every row of the claim on a pair table: a fairness metric per
    sensitive attribute, accuracy once (attribute "")."""
    attrs = _attributes(t, v) if any(m in ("eod", "dpd") for m in claim.metrics) else []
    return [(a, m) for m in claim.metrics if m not in ("eod", "dpd")
            for a in [""]] + [(a, m) for a in attrs for m in claim.metrics if m in ("eod", "dpd")]


def _applies(claim: Claim, t: PairTable, v: Values) -> bool:
    """C9 is judged where the study has controls at the table's alpha (collapsed or not)."""
    if claim.reference != "control":
        return True
    key = model_key(t.dataset, t.study, "control", t.student_arch, None, None, t.alpha)
    return bool(t.control or v.data.collapsed.get(key))


def _absent(claim: Claim, tables: list[PairTable], paper_attrs: dict[str, set[str]]
            ) -> list[dict[str, Any]]:
    """The claim's paper experiments that the store lacks, ``not run``."""
    have = {(t.dataset, t.teacher_arch, t.student_arch) for t in tables if t.alpha == 0.8}
    rows = []
    for dataset, teacher_arch, student_arch in claim.scope:
        if (dataset, teacher_arch, student_arch) in have:
            continue
        for attribute in (sorted(paper_attrs[dataset]) if claim.fairness else [""]):
            for metric in claim.metrics:
                rows.append(_row(claim, (dataset, "", teacher_arch, student_arch, 0.8),
                                 attribute, metric, True,
                                 {"verdict": "not run", "reason": "not in the store"}))
    return rows


def judge(data: ClaimData) -> pd.DataFrame:
    """``paper_claims.csv``: every claim on every experiment of the store that it applies to
    (the fairness claims per sensitive attribute), then the claim's paper experiments that
    the store lacks, ``not run``; verdicts after one Holm correction per family
    (:func:`kdray.analysis.verdicts.decide`). Columns :data:`COLUMNS`."""
    v = Values(data)
    paper_attrs = _paper_attributes()
    tables = pair_tables(data.experiments)
    rows = []
    for claim in CLAIMS:
        for t in (t for t in tables if _applies(claim, t, v)):
            exp = (t.dataset, t.study, t.teacher_arch, t.student_arch, t.alpha)
            paper_exp = t.alpha == 0.8 and exp[:1] + exp[2:4] in claim.scope
            for attribute, metric in _cells(claim, t, v):
                in_paper = paper_exp and (not attribute
                                          or attribute in paper_attrs.get(t.dataset, ()))
                rows.append(_row(claim, exp, attribute, metric, in_paper,
                                 _test(claim, t, metric, attribute, v)))
        rows += _absent(claim, tables, paper_attrs)
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in
                                        ("family", "family_size", "pvalue_holm",
                                         "seeds_for_power")])
    frame["reason"] = frame["reason"].fillna("")
    return verdicts.decide(frame, DIRECTIONS)[COLUMNS]
