"""What each of the paper's figures shows, as table-model figures (data, titles, labels).

- ``*_significance.png`` (Figs. 3, 8): #SC and #TC vs T, and DS test accuracy (mean ± std)
  vs T with the teacher's, the NDS's and (where the study has one) the control's accuracy
  as horizontal reference lines.
- ``*_class_accuracy.png`` (Fig. 1): DS class-wise test accuracy vs T, mean over seeds, one
  line per class (named), ``×`` where DS vs NDS is significant; only for <= 20 classes.
- ``*_fairness_<attribute>.png`` (Figs. 4, 5, 9): EOD and DPD (%) vs T for the DS
  (mean ± std), teacher, NDS and control as horizontal reference lines; beside them the paper's
  values where it has the cell (:mod:`kdray.analysis.paper_figure`).
- ``*_disagreement.png`` (Fig. 2): teacher vs NDS / teacher vs DS heatmaps, diagonal
  excluded; only for <= 200 classes (a larger heatmap is unreadable; the CSV has it all).

Titles come from the caller (:mod:`kdray.analysis.tables` formats every title).
"""

from __future__ import annotations

import numpy as np

from kdray.analysis.disagreement import to_dense
from kdray.analysis.groups import Names, PairTable, slug
from kdray.analysis.index import StatsIndex
from kdray.analysis.model import Heatmap, LineFigure, Panel, Reference, Series
from kdray.analysis.paper_figure import paper_overlay
from kdray.analysis.statistics import Comparison

MAX_CLASSES_FIG1 = 20
CONTROL_COLOR = "tab:green"  # the control's reference line, apart from the NDS's
MAX_CLASSES_HEATMAP = 200
MAX_TICKS = 16  # temperatures labelled one by one up to this many
MAX_CLASS_TICKS = 20


def _ticks(temps: np.ndarray) -> np.ndarray | None:
    return temps if len(temps) <= MAX_TICKS else None


def pair_figures(t: PairTable, ix: StatsIndex, names: Names, title: str,
                 level: float) -> list[LineFigure]:
    """Figs. 3/8, 1 and 4/5/9 of one paper table (pair and alpha)."""
    name = slug(t.dataset, t.study, f"{t.teacher_arch}-{t.student_arch}", f"a{t.alpha:g}")
    temps = np.array([e.temperature for e in t.experiments])
    out = [_significance(t, ix, f"{name}_significance.png", title, level, temps)]
    runs = [r for e in t.experiments for r in e.ds + e.nds + e.teacher]
    if not runs:  # every run of the pair collapsed
        return out
    classes = ix.stats.counts[runs[0]][0]
    if len(classes) <= MAX_CLASSES_FIG1 and any(e.ds for e in t.experiments):
        out.append(_class_accuracy(t, ix, names, classes, f"{name}_class_accuracy.png",
                                   f"{title}  (× significant DS vs NDS)", level, temps))
    out += _fairness(t, ix, name, title)
    return out


def _significance(t: PairTable, ix: StatsIndex, name: str, title: str, level: float,
                  temps: np.ndarray) -> LineFigure:
    counts = []
    for comp, label, marker in (("ds_vs_nds", "#SC (DS vs NDS)", "o"),
                                ("ds_vs_teacher", "#TC (DS vs teacher)", "s")):
        tested = [(e.temperature, ix.n_significant(e, comp)) for e in t.experiments]
        tested = [(x, n[0]) for x, n in tested if n is not None]
        counts.append(Series(label, np.array([x for x, _ in tested], float),
                             np.array([n for _, n in tested], float), marker=marker))
    acc = [ix.accuracy(e.ds) for e in t.experiments]
    ds = Series("DS test acc.", temps, np.array([m for m, _, _ in acc]),
                err=np.array([s if n > 1 else 0.0 for _, s, n in acc]), marker="^")
    panel = Panel(ylabel=f"significant classes (p <= {level:g})", series=tuple(counts),
                  xticks=_ticks(temps), right_ylabel="test accuracy (%)", right_series=(ds,),
                  right_references=(Reference("teacher acc.", ix.accuracy(t.teacher)[0]),
                                    Reference("NDS acc.", ix.accuracy(t.nds)[0], dashed=True),
                                    Reference("control acc.", ix.accuracy(t.control)[0],
                                              dashed=True, color=CONTROL_COLOR)),
                  legend_outside=True)
    return LineFigure(name, title, (panel,), size=(7.5, 3.6))


def _class_accuracy(t: PairTable, ix: StatsIndex, names: Names, classes: np.ndarray,
                    name: str, title: str, level: float, temps: np.ndarray) -> LineFigure:
    per_t = np.stack([ix.ds_class_accuracy(e)["acc_mean"].to_numpy(float) if e.ds
                      else np.full(len(classes), np.nan)
                      for e in t.experiments])  # [T, K], classes in order (NaN: collapsed)
    hits = np.zeros(per_t.shape, bool)
    for i, e in enumerate(t.experiments):
        ct = ix.class_tests(e, "ds_vs_nds")
        hits[i] = np.isin(classes, ct.loc[ct["pvalue"] <= level, "class"].to_numpy())
    series = tuple(Series(names.class_name(c), temps, per_t[:, k], marked=hits[:, k],
                          marker=".") for k, c in enumerate(classes))
    panel = Panel(ylabel="class test accuracy (%)", series=series, xticks=_ticks(temps),
                  legend_outside=True)
    return LineFigure(name, title, (panel,), size=(7.0, 3.6))


def _fairness(t: PairTable, ix: StatsIndex, name: str, title: str) -> list[LineFigure]:
    fair = ix.fairness(t.dataset, t.study)
    out = []
    for attr in sorted(fair["attribute"].unique()):
        a = fair[fair["attribute"] == attr]
        ds = a[(a["role"] == "ds") & (a["arch"] == t.student_arch)
               & (a["teacher_arch"] == t.teacher_arch) & (a["alpha"] == t.alpha)
               ].sort_values("temperature")
        if ds.empty:
            continue
        x = ds["temperature"].to_numpy(float)
        panels = []
        for metric in ("eod", "dpd"):
            refs = []
            for role, arch, label in (("teacher", t.teacher_arch, "teacher"),
                                      ("nds", t.student_arch, "NDS"),
                                      ("control", t.student_arch, "control")):
                ref = a[(a["role"] == role) & (a["arch"] == arch)
                        & ((a["alpha"] == t.alpha) if role == "control" else True)]
                refs.append(Reference(label, float(ref[f"{metric}_mean"].iloc[0]) if len(ref)
                                      else np.nan, dashed=role != "teacher",
                                      color=CONTROL_COLOR if role == "control" else None))
            paper_series, paper_refs = paper_overlay(ix.stats.paper_comparison, t, attr, metric)
            panels.append(Panel(
                ylabel=f"{metric.upper()} (%)", xticks=_ticks(x),
                references=tuple(refs) + paper_refs,
                series=(Series("DS", x, ds[f"{metric}_mean"].to_numpy(float),
                               err=ds[f"{metric}_std"].fillna(0).to_numpy(float)),)
                + paper_series))
        out.append(LineFigure(f"{name}_fairness_{slug(attr)}.png",
                              f"{title} — attribute {attr}", tuple(panels), size=(8.0, 3.4)))
    return out


def heatmap(c: Comparison, names: Names, title: str) -> Heatmap | None:
    """Fig. 2 for one comparison (rows: the teacher's prediction); None above 200 classes."""
    if len(c.classes) > MAX_CLASSES_HEATMAP:
        return None
    m = to_dense(c.matrix, c.classes)
    np.fill_diagonal(m, np.nan)  # the diagonal is agreement, excluded as in Fig. 2
    labels = None
    if len(c.classes) <= MAX_CLASS_TICKS:
        labels = tuple(names.class_name(k) if names.classes else str(k) for k in c.classes)
    return Heatmap(f"{c.name}_disagreement.png", title, m, labels)
