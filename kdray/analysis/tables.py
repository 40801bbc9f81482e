"""Build the table model: the statistics -> one :class:`~analysis.model.Report`.

Every table, title and label of the analysis is made here, once; the renderers only render.

- Per teacher/student pair and alpha (Tables 1, 5, 6, 7): rows Teacher, NDS, Control (the
  NDS at the step a DS at that alpha gives its CE term, where the study trained one), then
  DS at each T; columns Test Acc. (%) mean ± std over seeds, #SC (DS vs NDS) and #TC (DS vs teacher)
  significant classes at the chosen level, the same counts after Benjamini-Hochberg, and
  the number of seeds; then the significant classes by name. For datasets with sensitive
  attributes (Tables 2, 3, 8, 9): the same rows with Test Acc., EOD and DPD per attribute
  (mean ± std in %), and the attribute values' names where the runs recorded them.
- Then the groups with too few seeds (listed, not tested), the collapsed runs (named; kept
  out of every number above, and each cell that lost seeds says ``n = 4 of 5 (1
  collapsed)``), runs that no experiment uses, the studies, and the read/skip summary.
- The data tables (``significance.csv``, ``class_accuracy.csv``, ``class_tests.parquet``,
  ``fairness.csv``, ``disagreement/*.csv``): the ``study`` column only when some dataset has
  several studies;
  class-name columns (``class_name`` beside ``class``, ``teacher_pred_name`` and
  ``student_pred_name`` beside the predictions) only when some run recorded class names.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kdray.analysis.figure_data import heatmap, pair_figures
from kdray.analysis.groups import (COMPARISONS, Names, PairTable, model_key, pair_tables, slug,
                             study_name)
from kdray.analysis.index import StatsIndex
from kdray.analysis.model import Block, Figure, Report, Table, Text
from kdray.analysis.noise import NOISE_NOTE, noise_cells, noise_header
from kdray.analysis.statistics import Comparison, Statistics
from kdray.collapse import MARGIN

DASH = "–"
MAX_NAMED = 10  # significant classes named per cell of tables.md
SIG_HEADER = ["Model", "Temp", "Test Acc. (%)", "#SC", "#TC", "#SC (BH)", "#TC (BH)", "seeds"]


# -- formats and titles ------------------------------------------------------------------
def pm(mean: float, std: float, digits: int = 2) -> str:
    """``"68.39 ± 0.17"``; only the mean for one seed; ``–`` when undefined."""
    if mean is None or not math.isfinite(mean):
        return DASH
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def seeds_text(n: int, collapsed: int) -> str:
    """A cell's seeds: ``"5"``, or ``"n = 4 of 5 (1 collapsed)"`` when some collapsed."""
    return f"n = {n} of {n + collapsed} ({collapsed} collapsed)" if collapsed else f"{n}"


def pair_title(t: PairTable) -> str:
    return (f"{study_name(t.dataset, t.study)}: {t.teacher_arch} / {t.student_arch}, "
            f"alpha = {t.alpha:g}")


def experiment_label(dataset: str, study: str, teacher_arch: str, student_arch: str,
                     temperature: float, alpha: float) -> str:
    return (f"{study_name(dataset, study)} {teacher_arch}/{student_arch} "
            f"T={temperature:g} alpha={alpha:g}")


def comparison_title(c: Comparison) -> str:
    e = c.experiment
    student = (f"NDS {e.student_arch}" if c.student == "nds" else
               f"DS {e.student_arch} T={e.temperature:g} alpha={e.alpha:g}")
    return f"{study_name(e.dataset, e.study)}: teacher {e.teacher_arch} vs {student}"


def _listing(names: list[str]) -> str:
    if not names:
        return DASH
    more = f" (+{len(names) - MAX_NAMED} more)" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more


# -- one paper table (pair and alpha) ------------------------------------------------------
def _seeds(t: PairTable, ix: StatsIndex, role: str, n: int, temperature: float | None = None
           ) -> str:
    """:func:`seeds_text` of one model of the pair table."""
    return seeds_text(n, len(_collapsed(t, ix, role, temperature)))


def _collapsed(t: PairTable, ix: StatsIndex, role: str, temperature: float | None = None
               ) -> tuple[int, ...]:
    """The seeds whose run of one model of the pair table collapsed."""
    arch = t.teacher_arch if role == "teacher" else t.student_arch
    ds = role == "ds"
    key = model_key(t.dataset, t.study, role, arch, t.teacher_arch if ds else None,
                    temperature, t.alpha if role in ("ds", "control") else None)
    return ix.stats.collapsed_seeds.get(key, ())


def has_control(t: PairTable, ix: StatsIndex) -> bool:
    """The study trained controls at the table's alpha (some may have collapsed)."""
    return bool(t.control or _collapsed(t, ix, "control"))


def _significance_table(t: PairTable, ix: StatsIndex, title: str) -> Table:
    t_acc, n_acc = ix.accuracy(t.teacher), ix.accuracy(t.nds)
    rows = [["Teacher", DASH, pm(*t_acc[:2]), DASH, DASH, DASH, DASH,
             _seeds(t, ix, "teacher", t_acc[2])],
            ["NDS", DASH, pm(*n_acc[:2]), DASH, DASH, DASH, DASH, _seeds(t, ix, "nds", n_acc[2])]]
    if has_control(t, ix):
        c_acc = ix.accuracy(t.control)
        rows.append(["Control", DASH, pm(*c_acc[:2]), DASH, DASH, DASH, DASH,
                     _seeds(t, ix, "control", c_acc[2])])
    for e in t.experiments:
        cell = {c: ix.n_significant(e, c) for c, _, _ in COMPARISONS}
        sc, tc = ((str(n[0]), str(n[1])) if n else ("n/a", "n/a")
                  for n in (cell["ds_vs_nds"], cell["ds_vs_teacher"]))
        d_acc = ix.accuracy(e.ds)
        rows.append(["DS", f"{e.temperature:g}", pm(*d_acc[:2]), sc[0], tc[0], sc[1], tc[1],
                     _seeds(t, ix, "ds", d_acc[2], e.temperature)])
    name = slug(t.dataset, t.study, f"{t.teacher_arch}-{t.student_arch}", f"a{t.alpha:g}")
    return Table(f"tables/{name}", title, pd.DataFrame(rows, columns=SIG_HEADER))


def _significant_classes(t: PairTable, ix: StatsIndex, names: Names, level: float
                         ) -> list[Block]:
    lines, tested = [], False
    for e in t.experiments:
        cells = []
        for comp, _, label in COMPARISONS:
            if ix.n_significant(e, comp) is None:
                cells.append(f"{label}: not tested")
                continue
            tested = True
            ct = ix.class_tests(e, comp)
            hit = ct[ct["pvalue"] <= level].sort_values(["pvalue", "class"], kind="stable")
            cells.append(f"{label}: {_listing([names.class_name(c) for c in hit['class']])}")
        lines.append(f"- T={e.temperature:g}: " + "; ".join(cells))
    if not tested:
        return []
    return [Text(("", f"Classes with p <= {level:g}, most significant first (#SC: DS vs NDS, "
                  "#TC: DS vs teacher):", "", *lines))]


def _fairness_blocks(t: PairTable, ix: StatsIndex, names: Names, title: str) -> list[Block]:
    sub = ix.fairness(t.dataset, t.study)
    attrs = ix.attributes(t.dataset, t.study)  # a model whose every seed collapsed: dashes
    if not attrs:
        return []

    def pick(role: str, arch: str, temp: float | None) -> pd.DataFrame:
        m = (sub["role"] == role) & (sub["arch"] == arch)
        if role == "control":
            m &= sub["alpha"] == t.alpha
        if role == "ds":
            m &= ((sub["teacher_arch"] == t.teacher_arch) & (sub["temperature"] == temp)
                  & (sub["alpha"] == t.alpha))
        return sub[m].set_index("attribute")

    def row(label: str, temp: str, f: pd.DataFrame) -> list[str]:
        if f.empty:
            return [label, temp, DASH] + [DASH] * (4 * len(attrs))
        first = f.iloc[0]
        cells = [label, temp, pm(first["acc_mean"], first["acc_std"])]
        for a in attrs:
            cells += ([pm(f.loc[a, "eod_mean"], f.loc[a, "eod_std"]),
                       pm(f.loc[a, "dpd_mean"], f.loc[a, "dpd_std"])] if a in f.index
                      else [DASH, DASH])
        return cells + noise_cells(f, attrs)

    rows = [row("Teacher", DASH, pick("teacher", t.teacher_arch, None)),
            row("NDS", DASH, pick("nds", t.student_arch, None))]
    if has_control(t, ix):
        rows.append(row("Control", DASH, pick("control", t.student_arch, None)))
    rows += [row("DS", f"{e.temperature:g}", pick("ds", t.student_arch, e.temperature))
             for e in t.experiments]
    header = ["Model", "Temp", "Test Acc. (%)"] + [f"{m} {a} (%)" for a in attrs
                                                   for m in ("EOD", "DPD")] + noise_header(attrs)
    heading = (f"Fairness of {study_name(t.dataset, t.study)} {t.teacher_arch} / "
               f"{t.student_arch}, alpha = {t.alpha:g}")
    name = slug(t.dataset, t.study, f"{t.teacher_arch}-{t.student_arch}", f"a{t.alpha:g}")
    out: list[Block] = [
        Text(("", f"{heading} (EOD, DPD in %, mean ± std over seeds; lower is fairer):", "")),
        Table(f"tables/{name}_fairness", heading, pd.DataFrame(rows, columns=header)),
        NOISE_NOTE]
    named = [a for a in attrs if a in names.attributes]
    if named:
        out.append(Text(("", "Groups (each attribute's values):", "", *[
            f"- {a}: " + ", ".join(f"{v} = {n}" for v, n in enumerate(names.attributes[a]))
            for a in named])))
    return out


# -- the rest of tables.md -----------------------------------------------------------------
def _intro(level: float, normalisation: str) -> Text:
    norm = "β^c / β^M (eq. 8)" if normalisation == "ratio" else "β^c - β^M (Hooker et al.)"
    return Text(("# kdray analysis", "",
                 f"Two-tailed Welch t-test per class on {norm} across seeds; a class is "
                 f"significant when p <= {level:g}. #SC: DS vs NDS, #TC: DS vs teacher; (BH): "
                 f"the same counts after Benjamini-Hochberg adjustment at {level:g}. Test Acc. "
                 "is mean ± std (sample std) over seeds."))


def _notes(stats: Statistics, ix: StatsIndex) -> list[Block]:
    out: list[Block] = []
    if not stats.experiments:
        out.append(Text(("", "No distilled-student runs: no significance tables.")))
    degenerate = stats.significance.get("n_degenerate", pd.Series(dtype=int))
    if len(degenerate) and degenerate.sum():
        out.append(Text(("", f"{int(degenerate.sum())} class test(s) had no p-value (both sides "
                         "constant with different means, or an undefined normalised accuracy) "
                         "and were not counted; see n_degenerate in significance.csv.")))
    few = stats.too_few_seeds
    if len(few):
        rows = [[experiment_label(r.dataset, r.study, r.teacher_arch, r.student_arch,
                                  r.temperature, r.alpha), r.comparison, r.n_seeds_ds,
                 r.n_seeds_ref] for r in few.itertuples()]
        out += [Text(("", "## Groups with too few seeds (listed, not tested)", "")),
                Table("tables/too_few_seeds", "Groups with too few seeds (listed, not tested)",
                      pd.DataFrame(rows, columns=["group", "comparison", "DS seeds",
                                                  "reference seeds"]))]
    out += collapsed_blocks(stats)
    unused = stats.unreferenced
    if len(unused):
        rows = []
        for (d, st, role, arch), sub in unused.groupby(["dataset", "study", "role", "arch"]):
            acc = ix.accuracy(tuple(sub["run_id"]))
            rows.append([study_name(d, st), role, arch, acc[2], pm(*acc[:2])])
        out += [Text(("", "## Runs no experiment compares (no matching DS runs)", "")),
                Table("tables/unreferenced", "Runs no experiment compares",
                      pd.DataFrame(rows, columns=["dataset", "role", "arch", "seeds",
                                                  "Test Acc. (%)"]))]
    if stats.studies:
        out.append(Text(("", "## Studies (datasets trained with several options or recipes)",
                         "", *[f"- {study_name(d, label)}: `{key}`"
                               for (d, label), key in stats.studies.items()])))
    out.append(Text(("", "## Runs read", "", "```", *stats.summary.lines(), "```", "",
                     "Fairness: binary labels use class 1 as positive; multi-class labels are "
                     "one-vs-rest per class, averaged (Algorithm 1). A group with no positives "
                     "(TPR) or no negatives (FPR) for a class is left out of that rate's max - "
                     "min instead of counting as 0 (fairlearn's default).")))
    return out


def collapsed_blocks(stats: Statistics, heading: str = "##", name: str = "tables/collapsed"
                     ) -> list[Block]:
    """The collapsed runs, by name (tables.md and paper_comparison.md)."""
    low = stats.collapsed.drop_duplicates("run_id")  # a teacher may serve several studies
    if not len(low):
        return []
    rows = [[study_name(r.dataset, r.study), r.role, r.arch,
             "" if pd.isna(r.temperature) else f"{r.temperature:g}", r.seed, r.run_id,
             f"{100 * r.test_accuracy:.2f}", f"{100 * r.balanced_accuracy:.2f}"]
            for r in low.sort_values(["dataset", "study", "role", "temperature", "seed"])
            .itertuples()]
    return [Text(("", f"{heading} Collapsed runs ({len(low)} of "
                  f"{stats.runs['run_id'].nunique()}: at chance, kept out of every number)",
                  "", f"Balanced test accuracy below chance + {MARGIN:g} x (1 - chance) "
                  "(docs/claims.md): a constant predictor scores EOD = DPD = 0. No mean, "
                  "test or claim includes them; a cell that lost seeds says `n = 4 of 5 (1 "
                  "collapsed)`, and a claim row whose cell lost more than one is `inconclusive "
                  "(collapsed runs)`.")),
            Table(name, "Collapsed runs",
                  pd.DataFrame(rows, columns=["dataset", "role", "arch", "T", "seed", "run_id",
                                              "Test Acc. (%)", "Balanced Acc. (%)"]))]


# -- the data tables -------------------------------------------------------------------------
def _name_column(df: pd.DataFrame, column: str, name: str,
                 names: dict[tuple[str, str], Names] | Names) -> pd.DataFrame:
    """``df`` with ``name`` (the class names of ``column``) inserted right after it."""
    labels = np.empty(len(df), dtype=object)
    if isinstance(names, Names):
        parts = {None: np.arange(len(df))}
    else:
        parts = df.groupby(["dataset", "study"], sort=False).indices
    for part, idx in parts.items():
        n = names if part is None else names[part]
        uniq, inv = np.unique(df[column].to_numpy()[idx], return_inverse=True)
        labels[idx] = np.array([n.class_name(c) for c in uniq], dtype=object)[inv]
    df = df.copy()
    df.insert(df.columns.get_loc(column) + 1, name, labels)
    return df


def _data_tables(stats: Statistics) -> list[Table]:
    with_study, named = bool(stats.studies), stats.has_class_names

    def public(df: pd.DataFrame) -> pd.DataFrame:
        return df if with_study or "study" not in df.columns else df.drop(columns="study")

    cls, acc = stats.class_tests, stats.class_accuracy
    if named:
        cls = _name_column(cls, "class", "class_name", stats.names)
        acc = _name_column(acc, "class", "class_name", stats.names)
    out = [Table("significance", "#SC and #TC per experiment and comparison",
                 public(stats.significance), "significance.csv"),
           Table("class_accuracy", "Class accuracy per model (mean ± std over seeds, %)",
                 public(acc), "class_accuracy.csv"),
           Table("class_tests", "Welch test per class", public(cls), "class_tests.parquet"),
           Table("fairness", "EOD and DPD per model and attribute", public(stats.fairness),
                 "fairness.csv"),
           Table("too_few_seeds", "Groups with too few seeds", stats.too_few_seeds),
           Table("runs", "Runs read",
                 stats.runs.drop(columns=["predictions_sha256"], errors="ignore"))]
    for c in stats.comparisons:
        df = c.matrix
        if named:
            n = stats.names[(c.experiment.dataset, c.experiment.study)]
            df = _name_column(_name_column(df, "student_pred", "student_pred_name", n),
                              "teacher_pred", "teacher_pred_name", n)
        out.append(Table(f"disagreement/{c.name}", comparison_title(c), df,
                         f"disagreement/{c.name}.csv"))
    return out


# -- the report --------------------------------------------------------------------------------
def build_report(stats: Statistics, level: float, normalisation: str, out: str = "",
                 figures: bool = True) -> Report:
    """The whole table model of one analysis; ``figures=False`` leaves the figures out."""
    ix = StatsIndex(stats)
    blocks: list[Block] = [_intro(level, normalisation)]
    figs: list[Figure] = []
    for t in pair_tables(stats.experiments):
        names, title = stats.names[(t.dataset, t.study)], pair_title(t)
        blocks += [Text(("", f"## {title}", "")), _significance_table(t, ix, title)]
        blocks += _significant_classes(t, ix, names, level)
        blocks += _fairness_blocks(t, ix, names, title)
        if figures:
            figs += pair_figures(t, ix, names, title, level)
    blocks += _notes(stats, ix)
    if figures:
        for c in stats.comparisons:
            h = heatmap(c, stats.names[(c.experiment.dataset, c.experiment.study)],
                        comparison_title(c))
            figs += [h] if h is not None else []
    summary = stats.summary
    return Report(
        blocks=blocks,
        tables=_data_tables(stats) + [b for b in blocks if isinstance(b, Table)],
        figures=figs,
        manifest={"runs": dict(zip(stats.runs["run_id"], stats.runs["predictions_sha256"])),
                  "level": level, "normalisation": normalisation},
        config={"store": summary.store, "out": out, "level": level,
                "normalisation": normalisation},
        summary={"runs_read": summary.n_read, "runs_skipped": len(summary.skipped),
                 "prediction_rows": summary.n_rows})
