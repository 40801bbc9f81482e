"""The table model of ``paper_comparison.md``: kdray beside the paper, and the claims' verdicts.

:func:`extend` adds to a :class:`~analysis.model.Report`:

- the page ``paper_comparison.md``: per table of the paper how many of its printed numbers
  the store has; per (dataset, study, pair) every compared cell, kdray's mean ± std (n
  seeds) beside the paper's, under the study's recipe where it differs from the paper's;
  then the claims with their fixed rules, the verdicts, and the paper's experiments that
  the store lacks (:mod:`kdray.analysis.claim_tables`), and the collapsed runs by name;
- the data tables ``paper_comparison.csv`` (every cell of the paper, per study, with its
  status), ``paper_claims.csv`` (every verdict) and ``paper_claim_trends.csv`` (the trends
  per T), also logged to the W&B run;
- the epilogue printed after tables.md: the recipes, the per-table counts, the verdicts
  counted per family, the verdicts and the trends per T.
"""

from __future__ import annotations

import math

import pandas as pd

from kdray.analysis.claim_tables import (claim_blocks, control_lines, shape_table, tally_lines,
                                        verdict_rows)
from kdray.analysis.claims import VERDICTS
from kdray.analysis.groups import ROLE_ORDER, slug, study_name
from kdray.analysis.model import Block, Report, Table, Text
from kdray.analysis.paper_results import paper_results
from kdray.analysis.statistics import Statistics
from kdray.analysis.tables import DASH, collapsed_blocks, pm, seeds_text

PAGE = "paper_comparison.md"
METRIC_LABELS = {"test_accuracy": "Test Acc. (%)", "n_sc": "#SC", "n_tc": "#TC",
                 "eod": "EOD {} (%)", "dpd": "DPD {} (%)"}
ROLE_LABELS = {"teacher": "Teacher", "nds": "NDS", "control": "Control", "ds": "DS"}
CELL = ["dataset", "teacher_arch", "student_arch", "role", "temperature", "alpha", "metric",
        "attribute"]


def _number(x: float, digits: int = 2) -> str:
    return DASH if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _label(metric: str, attribute: str) -> str:
    return METRIC_LABELS[metric].format(attribute)


def _cell_text(mean: float, std: float, metric: str) -> str:
    if metric in ("n_sc", "n_tc"):
        return DASH if not math.isfinite(mean) else f"{mean:.0f}"
    return pm(mean, std)


def table_counts(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per table of the paper: its printed numbers, how many the store has (in any study),
    how many it lacks."""
    paper = paper_results()
    paper.loc[paper["role"] != "ds", "alpha"] = math.nan
    done = comparison[comparison["status"] == "compared"][CELL].drop_duplicates()
    merged = paper.merge(done.assign(_compared=True), on=CELL, how="left")
    merged["_compared"] = merged["_compared"].fillna(False).astype(bool)
    out = merged.groupby("table", sort=False)["_compared"].agg(["size", "sum"]).reset_index()
    out.columns = ["table", "paper numbers", "compared"]
    out["not run"] = out["paper numbers"] - out["compared"]
    out["table"] = "Table " + out["table"]
    return out


def _block(sub: pd.DataFrame) -> pd.DataFrame:
    """One (dataset, study, pair)'s compared cells as a paper-style table: kdray | paper."""
    columns = list(dict.fromkeys(zip(sub["metric"], sub["attribute"])))
    models = sub.assign(_r=sub["role"].map(ROLE_ORDER), _a=sub["alpha"].fillna(-1),
                        _t=sub["temperature"].fillna(-1))
    rows = []
    for (_, _, _, role), model in models.groupby(["_r", "_a", "_t", "role"], sort=True):
        first = model.iloc[0]
        cells = model.set_index(["metric", "attribute"])
        row = [ROLE_LABELS[role],
               DASH if pd.isna(first["temperature"]) else f"{first['temperature']:g}",
               DASH if pd.isna(first["alpha"]) else f"{first['alpha']:g}"]
        for metric, attr in columns:
            c = cells.loc[(metric, attr)] if (metric, attr) in cells.index else None
            row += ([DASH, DASH] if c is None else
                    [_cell_text(c["kdray_mean"], c["kdray_std"], metric),
                     _cell_text(c["paper_mean"], c["paper_std"], metric)])
        n, lost = cells["kdray_n"].max(), cells["kdray_n_collapsed"].fillna(0).max()
        rows.append(row + [DASH if not math.isfinite(n) else seeds_text(int(n), int(lost))])
    header = ["Model", "Temp", "alpha"] + [f"{_label(m, a)} {who}" for m, a in columns
                                           for who in ("kdray", "paper")] + ["seeds"]
    return pd.DataFrame(rows, columns=header)


def _compared_blocks(comparison: pd.DataFrame) -> tuple[list[Block], list[Table]]:
    done = comparison[comparison["status"].isin(["compared", "all collapsed"])]
    blocks: list[Block] = []
    tables: list[Table] = []
    keys = ["dataset", "study", "teacher_arch", "student_arch"]
    for (dataset, study, t_arch, s_arch), sub in done.groupby(keys, sort=False):
        title = f"{study_name(dataset, study)}: {t_arch} / {s_arch}"
        tabs = ", ".join(sorted({t for ts in sub["tables"] for t in ts.split(", ")}, key=int))
        table = Table(f"paper/{slug(dataset, study, f'{t_arch}-{s_arch}')}",
                      f"{title}, kdray beside the paper", _block(sub))
        blocks += [Text(("", f"### {title} (paper Table(s) {tabs})", "",
                         f"kdray recipe: {sub['recipe'].iloc[0]}", "")), table]
        tables.append(table)
    if not blocks:
        blocks.append(Text(("", "No cell of the store is one the paper reports.")))
    return blocks, tables


def _collapsed_line(stats: Statistics) -> list[str]:
    n, total = stats.collapsed["run_id"].nunique(), stats.runs["run_id"].nunique()
    return [f"- collapsed runs (at chance): {n} of {total}, kept out of every number and "
            "claim; tables.md and paper_comparison.md name them"] if n else []


def _epilogue(stats: Statistics, counts: pd.DataFrame, collapsed: list[str]) -> list[Block]:
    comparison, claims = stats.paper_comparison, stats.claims
    done = comparison[comparison["status"].isin(["compared", "all collapsed"])]
    recipes = [f"- {study_name(d, s)}: kdray recipe {r}" for d, s, r in
               done[["dataset", "study", "recipe"]].drop_duplicates().itertuples(index=False)]
    per_table = ", ".join(f"{table}: {compared} of {n}" for table, n, compared, _ in
                          counts.itertuples(index=False, name=None))
    out: list[Block] = [Text((
        "", f"## Beside the paper ({PAGE})", "", *recipes, *collapsed,
        f"- paper numbers the store has: {per_table}",
        "- verdicts (docs/claims.md), one line per family:", *tally_lines(claims), ""))]
    verdicts = verdict_rows(claims)
    if len(verdicts):
        out.append(Table("paper/verdicts", "Verdicts", verdicts))
    if control_lines(claims):
        out.append(Text(("", "The DS beside its matched control (C9):", *control_lines(claims))))
    shape = shape_table(stats.trend_shapes, claims, "paper/trend_shapes")
    if shape is not None:
        out += [Text(("", "The trends per T (mean over seeds [95% CI]):", "")), shape]
    return out


def extend(report: Report, stats: Statistics) -> None:
    """Add the paper comparison's page, data tables and epilogue to ``report``."""
    comparison, claims = stats.paper_comparison, stats.claims
    counts = table_counts(comparison)
    blocks, shown = _compared_blocks(comparison)
    collapsed = _collapsed_line(stats)
    page: list[Block] = [
        Text(("# kdray beside the paper", "",
              "Every number of the paper's Tables 1, 2, 3, 5, 6, 7, 8 and 9 "
              "(kdray/analysis/paper_results.csv) that the store has: kdray's mean ± std over seeds "
              "(sample std; seeds: how many; `n = 4 of 5 (1 collapsed)` where runs "
              "collapsed) beside the paper's as printed (mean ± std over its five seeds). "
              "#SC and #TC are counts. Each study's recipe is named where it "
              "differs from the paper's (Appendix C, as kdray's defaults implement it): a "
              "study on another recipe is not the paper's experiment. All cells, with the "
              "ones the store lacks (`not run`), are in paper_comparison.csv.",
              *(["", *collapsed] if collapsed else []), "",
              "## Cells compared", "")),
        Table("paper/table_counts", "The paper's numbers the store has, per table", counts),
        *blocks, *claim_blocks(claims, stats.trend_shapes),
        *collapsed_blocks(stats, "##", "paper/collapsed")]
    report.pages[PAGE] = page
    report.tables += [Table("paper_comparison", "kdray beside the paper, every cell",
                            comparison, "paper_comparison.csv"),
                      Table("paper_claims", "The paper's claims, verdicts", claims,
                            "paper_claims.csv"),
                      Table("paper_claim_trends", "The trend claims per T", stats.trend_shapes,
                            "paper_claim_trends.csv"),
                      *[b for b in page if isinstance(b, Table)]]
    report.epilogue += _epilogue(stats, counts, collapsed)
    report.summary.update({f"claims_{v.replace(' ', '_')}": int((claims["verdict"] == v).sum())
                           for v in VERDICTS})
