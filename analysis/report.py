"""``tables.md``: every experiment laid out like the paper's tables.

Per teacher/student pair and alpha (Tables 1, 5, 6, 7): rows Teacher, NDS, then DS at each
T; columns Test Acc. (%) mean ± std over seeds, #SC (DS vs NDS) and #TC (DS vs teacher)
significant classes at the chosen level, the same counts after Benjamini-Hochberg, and the
number of seeds. For datasets with sensitive attributes (Tables 2, 3, 8, 9): the same rows
with Test Acc., EOD and DPD per attribute (mean ± std in %). Then the groups with too few
seeds (listed, not tested), runs that no experiment uses, and the read/skip summary.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from analysis.job import AnalysisResult

DASH = "–"


def pm(mean: float, std: float, digits: int = 2) -> str:
    """``"68.39 ± 0.17"``; only the mean for one seed; ``–`` when undefined."""
    if mean is None or not math.isfinite(mean):
        return DASH
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def slug(*parts: object) -> str:
    """A file-name-safe name from parts (``cifar100_resnet56-resnet20_a0.8``)."""
    text = "_".join(str(p) for p in parts if p not in ("", None))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _acc(runs: pd.DataFrame, ids: tuple[str, ...]) -> tuple[float, float, int]:
    acc = 100.0 * runs.set_index("run_id").loc[list(ids), "test_accuracy"].to_numpy(float)
    return (float(acc.mean()) if len(acc) else np.nan,
            float(acc.std(ddof=1)) if len(acc) > 1 else np.nan, len(acc))


def _name(dataset: str, study: str) -> str:
    return dataset + (f" [{study}]" if study else "")


def experiment_tables(result: "AnalysisResult") -> list[str]:
    """The significance (and, with attributes, fairness) table of each pair and alpha."""
    runs, sig, fair = result.runs, result.significance, result.fairness
    lines: list[str] = []
    by_table: dict[tuple, list] = {}
    for e in result.experiments:
        by_table.setdefault(e.family + (e.alpha,), []).append(e)
    for (dataset, study, t_arch, s_arch, alpha), exps in by_table.items():
        e0 = exps[0]
        lines += ["", f"## {_name(dataset, study)}: {t_arch} / {s_arch}, alpha = {alpha:g}", ""]
        t_acc, n_acc = _acc(runs, e0.teacher), _acc(runs, e0.nds)
        rows = [["Teacher", DASH, pm(*t_acc[:2]), DASH, DASH, DASH, DASH, t_acc[2]],
                ["NDS", DASH, pm(*n_acc[:2]), DASH, DASH, DASH, DASH, n_acc[2]]]
        for e in exps:
            cell = {}
            for comp in ("ds_vs_nds", "ds_vs_teacher"):
                hit = sig[(sig["dataset"] == dataset) & (sig["study"] == study)
                          & (sig["teacher_arch"] == t_arch) & (sig["student_arch"] == s_arch)
                          & (sig["temperature"] == e.temperature) & (sig["alpha"] == alpha)
                          & (sig["comparison"] == comp)]
                cell[comp] = ((str(int(hit["n_significant"].iloc[0])),
                               str(int(hit["n_significant_bh"].iloc[0]))) if len(hit)
                              else ("n/a", "n/a"))
            d_acc = _acc(runs, e.ds)
            rows.append(["DS", f"{e.temperature:g}", pm(*d_acc[:2]), cell["ds_vs_nds"][0],
                         cell["ds_vs_teacher"][0], cell["ds_vs_nds"][1],
                         cell["ds_vs_teacher"][1], d_acc[2]])
        lines += _md(["Model", "Temp", "Test Acc. (%)", "#SC", "#TC", "#SC (BH)", "#TC (BH)",
                      "seeds"], rows)
        lines += _fairness_rows(fair, dataset, study, t_arch, s_arch, alpha, exps)
    return lines


def _fairness_rows(fair: pd.DataFrame, dataset: str, study: str, t_arch: str, s_arch: str,
                   alpha: float, exps: list) -> list[str]:
    sub = fair[(fair["dataset"] == dataset) & (fair["study"] == study)]
    attrs = sorted(sub["attribute"].unique())
    if not attrs:
        return []

    def pick(role: str, arch: str, temp: float | None) -> pd.DataFrame:
        m = (sub["role"] == role) & (sub["arch"] == arch)
        if role == "ds":
            m &= ((sub["teacher_arch"] == t_arch) & (sub["temperature"] == temp)
                  & (sub["alpha"] == alpha))
        return sub[m].set_index("attribute")

    def row(label: str, temp: str, f: pd.DataFrame) -> list[str]:
        if f.empty:
            return [label, temp, DASH] + [DASH] * (2 * len(attrs))
        first = f.iloc[0]
        cells = [label, temp, pm(first["acc_mean"], first["acc_std"])]
        for a in attrs:
            cells += ([pm(f.loc[a, "eod_mean"], f.loc[a, "eod_std"]),
                       pm(f.loc[a, "dpd_mean"], f.loc[a, "dpd_std"])] if a in f.index
                      else [DASH, DASH])
        return cells

    rows = [row("Teacher", DASH, pick("teacher", t_arch, None)),
            row("NDS", DASH, pick("nds", s_arch, None))]
    rows += [row("DS", f"{e.temperature:g}", pick("ds", s_arch, e.temperature)) for e in exps]
    header = ["Model", "Temp", "Test Acc. (%)"] + [f"{m} {a} (%)" for a in attrs
                                                   for m in ("EOD", "DPD")]
    return ["", f"Fairness of {_name(dataset, study)} {t_arch} / {s_arch}, alpha = {alpha:g} "
            "(EOD, DPD in %, mean ± std over seeds; lower is fairer):", ""] + _md(header, rows)


def format_tables(result: "AnalysisResult") -> str:
    """The whole of ``tables.md`` as a string (what the job prints at the end)."""
    norm = ("β^c / β^M (eq. 8)" if result.normalisation == "ratio"
            else "β^c - β^M (Hooker et al.)")
    lines = ["# kdray analysis", "",
             f"Two-tailed Welch t-test per class on {norm} across seeds; a class is significant "
             f"when p <= {result.level:g}. #SC: DS vs NDS, #TC: DS vs teacher; (BH): the same "
             f"counts after Benjamini-Hochberg adjustment at {result.level:g}. Test Acc. is "
             "mean ± std (sample std) over seeds."]
    lines += experiment_tables(result)
    if not result.experiments:
        lines += ["", "No distilled-student runs: no significance tables."]
    degenerate = result.significance.get("n_degenerate", pd.Series(dtype=int))
    if len(degenerate) and degenerate.sum():
        lines += ["", f"{int(degenerate.sum())} class test(s) had no p-value (both sides constant "
                  "with different means, or an undefined normalised accuracy) and were not "
                  "counted; see n_degenerate in significance.csv."]
    if len(result.too_few_seeds):
        lines += ["", "## Groups with too few seeds (listed, not tested)", ""]
        lines += _md(["group", "comparison", "DS seeds", "reference seeds"],
                     [[f"{_name(r.dataset, r.study)} {r.teacher_arch}/{r.student_arch} "
                       f"T={r.temperature:g} alpha={r.alpha:g}", r.comparison, r.n_seeds_ds,
                       r.n_seeds_ref] for r in result.too_few_seeds.itertuples()])
    unused = result.unreferenced
    if len(unused):
        lines += ["", "## Runs no experiment compares (no matching DS runs)", ""]
        rows = []
        for (d, st, role, arch), sub in unused.groupby(["dataset", "study", "role", "arch"]):
            acc = 100.0 * sub["test_accuracy"].to_numpy(float)
            rows.append([_name(d, st), role, arch, len(sub),
                         pm(acc.mean(), acc.std(ddof=1) if len(acc) > 1 else np.nan)])
        lines += _md(["dataset", "role", "arch", "seeds", "Test Acc. (%)"], rows)
    if result.studies:
        lines += ["", "## Studies (datasets trained with several options or recipes)", ""]
        lines += [f"- {_name(d, label)}: `{key}`" for (d, label), key in result.studies.items()]
    lines += ["", "## Runs read", "", "```", *result.summary.lines(), "```",
              "", "Fairness: binary labels use class 1 as positive; multi-class labels are "
              "one-vs-rest per class, averaged (Algorithm 1). A group with no positives (TPR) "
              "or no negatives (FPR) for a class is left out of that rate's max - min instead "
              "of counting as 0 (fairlearn's default)."]
    return "\n".join(lines) + "\n"
