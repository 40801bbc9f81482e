"""kdray's numbers beside the paper's: every cell of the paper's tables, matched to the store.

A cell of the paper (:func:`kdray.analysis.paper_results.paper_cells`) is a (dataset, teacher/student
pair, role, T, alpha, metric, attribute). For every study of the store on that dataset, the
cell is matched to kdray's models by name:

- teacher: the study's teacher runs of ``arch == teacher_arch``; NDS: its NDS runs of
  ``arch == student_arch``; DS: the experiment (teacher_arch, student_arch, T, alpha);
- beside each NDS cell, one row per alpha at which the study trained controls (role
  ``control``, kdray's own: no paper number, ``paper_mean`` NaN);
- ``test_accuracy``: mean and sample std over the seeds (%); ``eod``/``dpd``: fairness.csv's
  mean and std (%), with the mean half-width of the runs' bootstrap 95% intervals; ``n_sc``
  and ``n_tc``: significance.csv's #SC (DS vs NDS) and #TC (DS vs teacher) at the analysis
  level (the paper's 0.05 by default).

Collapsed runs (``docs/claims.md``) give no value: ``kdray_n`` counts the seeds that did not
collapse and ``kdray_n_collapsed`` those that did.

``status``: ``compared`` (both have it), ``all collapsed`` (every seed of kdray's model
collapsed: no value), ``not run`` (the store has no such models, or no study of the dataset
at all: then one row with an empty study), ``too few seeds`` (#SC/#TC of DS runs that were
not tested). ``recipe``: how the study was trained where it differs from
kdray's paper recipe for the dataset and student (:class:`kdray.spec.RunSpec`'s defaults, the
paper's Appendix C); a laptop study is not the paper's setting.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from kdray.analysis.groups import STUDY_FIELDS, _flatten
from kdray.analysis.groups import model_key as _model
from kdray.analysis.paper_results import paper_cells

COLUMNS = ["dataset", "study", "teacher_arch", "student_arch", "role", "temperature", "alpha",
           "metric", "attribute", "status", "kdray_mean", "kdray_std", "kdray_n",
           "kdray_n_collapsed", "kdray_ci95_halfwidth", "paper_mean", "paper_std", "difference",
           "tables", "recipe", "notes"]
SIGNIFICANCE = {"n_sc": "ds_vs_nds", "n_tc": "ds_vs_teacher"}
# a control's row beside the paper's NDS cell: kdray's own model, no paper number
CONTROL_CELL = {"role": "control", "paper_mean": math.nan, "paper_std": math.nan,
                "notes": "kdray's control: the NDS at lr x (1 - alpha), weight decay / "
                         "(1 - alpha); the paper has none"}
PAPER_RECIPE = "kdray's paper recipe"


class _StoreCells:
    """kdray's value of any model cell of a study, looked up by :func:`_model` keys."""

    def __init__(self, runs: pd.DataFrame, fairness: pd.DataFrame,
                 significance: pd.DataFrame, collapsed: dict[tuple, tuple[int, ...]]) -> None:
        self.collapsed = collapsed
        self.acc: dict[tuple, list[float]] = {}
        kept = runs[~runs["collapsed"]] if "collapsed" in runs else runs
        for r in kept.itertuples():
            key = _model(r.dataset, r.study, r.role, r.arch, r.teacher_arch, r.temperature,
                         r.alpha)
            self.acc.setdefault(key, []).append(100.0 * r.test_accuracy)
        self.fair = {_model(r.dataset, r.study, r.role, r.arch, r.teacher_arch, r.temperature,
                            r.alpha) + (r.attribute,): r for r in fairness.itertuples()}
        self.sig = {_model(r.dataset, r.study, "ds", r.student_arch, r.teacher_arch,
                           r.temperature, r.alpha) + (r.comparison,): r
                    for r in significance.itertuples()}

    def value(self, model: tuple, metric: str, attribute: str) -> dict[str, Any]:
        """``status`` and kdray's ``mean``, ``std``, ``n``, ``n_collapsed``,
        ``ci95_halfwidth`` of one cell."""
        lost = len(self.collapsed.get(model, ()))
        if model not in self.acc:
            return {"status": "all collapsed", "n": 0, "n_collapsed": lost} if lost else {
                "status": "not run"}
        return {**self._value(model, metric, attribute), "n_collapsed": lost}

    def _value(self, model: tuple, metric: str, attribute: str) -> dict[str, Any]:
        if metric == "test_accuracy":
            x = np.array(self.acc[model])
            return {"status": "compared", "mean": x.mean(),
                    "std": x.std(ddof=1) if len(x) > 1 else math.nan, "n": len(x)}
        if metric in SIGNIFICANCE:
            row = self.sig.get(model + (SIGNIFICANCE[metric],))
            if row is None:
                return {"status": "too few seeds"}
            return {"status": "compared", "mean": float(row.n_significant),
                    "n": int(row.n_seeds_ds)}
        row = self.fair.get(model + (attribute,))
        if row is None:
            return {"status": "not run"}
        return {"status": "compared", "mean": getattr(row, f"{metric}_mean"),
                "std": getattr(row, f"{metric}_std"), "n": int(row.n_seeds),
                "ci95_halfwidth": getattr(row, f"{metric}_ci95_halfwidth")}


def recipe_differences(study_key: str, dataset: str, arch: str) -> str:
    """How a study's recipe differs from kdray's paper recipe for ``dataset`` and ``arch``:
    ``"epochs=5 (paper 100), optimizer=adamw (paper sgd), ..."``, or :data:`PAPER_RECIPE`.
    Fields the study's runs did not record are left out; a dataset or model that kdray's
    registries do not know gets the study's recorded fields as they are."""
    from kdray.spec import RunSpec

    study = _flatten(json.loads(study_key))
    try:
        paper = _flatten({f: v for f, v in RunSpec(dataset=dataset, role="nds",
                                                   arch=arch).to_dict().items()
                          if f in STUDY_FIELDS})
    except ValueError:
        paper = {}
    text = lambda v: (f"{v:.4g}" if isinstance(v, float)  # noqa: E731
                      else json.dumps(v, default=str).strip('"'))
    parts = [f"{f}={text(v)}" + (f" (paper {text(paper[f])})" if f in paper else "")
             for f, v in sorted(study.items())
             if v is not None and (f not in paper or text(v) != text(paper[f]))]
    return ", ".join(parts) if parts else PAPER_RECIPE


def _kdray(cell: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    """A row of paper_comparison.csv: the cell with kdray's value ``v`` (``_StoreCells.value``)."""
    return {**cell, "status": v["status"], **{f"kdray_{k}": v[k] for k in (
        "mean", "std", "n", "n_collapsed", "ci95_halfwidth") if k in v}}


def _control_alphas(runs: pd.DataFrame) -> dict[tuple[str, str, str], list[float]]:
    """(dataset, study, arch) -> the alphas of the study's controls (collapsed ones too)."""
    c = runs[runs["role"] == "control"]
    return {k: sorted(set(sub["alpha"].astype(float)))
            for k, sub in c.groupby(["dataset", "study", "arch"], sort=True)}


def compare(runs: pd.DataFrame, fairness: pd.DataFrame, significance: pd.DataFrame,
            collapsed: dict[tuple, tuple[int, ...]] | None = None) -> pd.DataFrame:
    """``paper_comparison.csv``: every cell of the paper, per study of its dataset (see the
    module docstring); ``difference`` = kdray - paper. ``runs``: every run, with a
    ``collapsed`` column where some collapsed (their values are left out; the study and its
    recipe still count); ``collapsed``: model key -> the seeds that did
    (:attr:`kdray.analysis.statistics.Statistics.collapsed_seeds`)."""
    cells = paper_cells()
    store = _StoreCells(runs, fairness, significance, collapsed or {})
    # one study per label: archs trained with different recipes share the label "" (their
    # study_key differs), so a cell's recipe is that of its own arch's runs
    studies = runs[["dataset", "study", "study_key"]].drop_duplicates(["dataset", "study"])
    by_dataset = {d: list(sub.itertuples(index=False)) for d, sub in studies.groupby("dataset")}
    arch_keys = {(r.dataset, r.study, r.arch): r.study_key for r in runs.itertuples()}
    recipes: dict[tuple, str] = {}
    controls = _control_alphas(runs)
    rows = []
    for c in cells.itertuples(index=False):
        paper = {"paper_mean": c.mean, "paper_std": c.std, "tables": c.tables, "notes": c.notes}
        for s in by_dataset.get(c.dataset, [None]):
            base = {f: getattr(c, f) for f in COLUMNS if hasattr(c, f)}
            if s is None:
                rows.append({**base, "study": "", "status": "not run", **paper})
                continue
            arch = c.teacher_arch if c.role == "teacher" else c.student_arch
            own = arch_keys.get((c.dataset, s.study, arch),
                                arch_keys.get((c.dataset, s.study, c.student_arch), s.study_key))
            key = (own, c.dataset, c.student_arch)
            if key not in recipes:
                recipes[key] = recipe_differences(*key)
            cell = {**base, "study": s.study, **paper, "recipe": recipes[key]}
            rows.append(_kdray(cell, store.value(_model(
                c.dataset, s.study, c.role, arch, c.teacher_arch if c.role == "ds" else None,
                c.temperature, c.alpha), c.metric, c.attribute)))
            for a in controls.get((c.dataset, s.study, arch), []) if c.role == "nds" else []:
                rows.append(_kdray({**cell, **CONTROL_CELL, "alpha": a}, store.value(_model(
                    c.dataset, s.study, "control", arch, None, None, a), c.metric, c.attribute)))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["difference"] = out["kdray_mean"] - out["paper_mean"]
    return out
