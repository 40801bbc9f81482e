"""The table model of ``paper_comparison.md``: kdray beside the paper, and the claims' verdicts.

:func:`extend` adds to a :class:`~analysis.model.Report`:

- the page ``paper_comparison.md``: per table of the paper how many of its printed numbers
  the store has; per (dataset, study, pair) every compared cell, kdray's mean ± std (n
  seeds) beside the paper's, under the study's recipe where it differs from the paper's;
  then the claims with their fixed rules, the verdicts, and the paper's experiments that
  the store lacks;
- the data tables ``paper_comparison.csv`` (every cell of the paper, per study, with its
  status) and ``paper_claims.csv`` (every verdict), both also logged to the W&B run;
- the epilogue printed after tables.md: the recipes, the per-table counts and the verdicts.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.claims import CLAIMS, VERDICTS
from analysis.groups import slug, study_name
from analysis.model import Block, Report, Table, Text
from analysis.paper_results import paper_results
from analysis.statistics import Statistics
from analysis.tables import DASH, pm

PAGE = "paper_comparison.md"
METRIC_LABELS = {"test_accuracy": "Test Acc. (%)", "n_sc": "#SC", "n_tc": "#TC",
                 "eod": "EOD {} (%)", "dpd": "DPD {} (%)"}
ROLE_LABELS = {"teacher": "Teacher", "nds": "NDS", "ds": "DS"}
CELL = ["dataset", "teacher_arch", "student_arch", "role", "temperature", "alpha", "metric",
        "attribute"]
VERDICT_HEADER = ["claim", "experiment", "attribute", "metric", "T", "statistic", "p", "n",
                  "verdict", "reason"]


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
    order = {"teacher": 0, "nds": 1, "ds": 2}
    models = sub.assign(_r=sub["role"].map(order), _a=sub["alpha"].fillna(-1),
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
        n = cells["kdray_n"].max()
        rows.append(row + [DASH if not math.isfinite(n) else f"{n:.0f}"])
    header = ["Model", "Temp", "alpha"] + [f"{_label(m, a)} {who}" for m, a in columns
                                           for who in ("kdray", "paper")] + ["seeds"]
    return pd.DataFrame(rows, columns=header)


def _compared_blocks(comparison: pd.DataFrame) -> tuple[list[Block], list[Table]]:
    done = comparison[comparison["status"] == "compared"]
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


def _experiment(r) -> str:
    return (f"{study_name(r.dataset, r.study)} {r.teacher_arch}/{r.student_arch} "
            f"alpha={r.alpha:g}")


def verdict_rows(claims: pd.DataFrame) -> pd.DataFrame:
    """The verdicts of the store's experiments as display strings (:data:`VERDICT_HEADER`)."""
    rows = []
    for r in claims[claims["reason"] != "not in the store"].itertuples():
        n = DASH if pd.isna(r.n) else (f"{r.n:.0f}" if pd.isna(r.n_ref)
                                       else f"{r.n:.0f} vs {r.n_ref:.0f}")
        p = DASH if pd.isna(r.pvalue) else f"{r.pvalue:.3g}"
        rows.append([r.claim + ("" if r.in_paper else "*"), _experiment(r),
                     r.attribute or DASH, r.metric, r.temperatures or DASH,
                     _number(r.statistic, 3), p, n, r.verdict, r.reason or DASH])
    return pd.DataFrame(rows, columns=VERDICT_HEADER)


def _claim_blocks(claims: pd.DataFrame) -> list[Block]:
    rules = pd.DataFrame([[c.id, c.statement, c.source, c.rule] for c in CLAIMS],
                         columns=["claim", "statement", "source", "rule"])
    out: list[Block] = [
        Text(("", "## The paper's claims, judged by rules fixed before any run", "",
              "reproduced: the paper's direction at p <= 0.05; contradicted: the opposite "
              "direction at p <= 0.05; inconclusive: neither, or degenerate data (the reason "
              "says which); not run: the data is missing. Welch: scipy.stats.ttest_ind("
              "equal_var=False), statistic t (DS - reference); Spearman: scipy.stats."
              "spearmanr, statistic ρ. * marks an experiment the paper does not state the "
              "claim on (the rule applies all the same).", "")),
        Table("paper/claim_rules", "The paper's claims and their rules", rules),
        Text(("", "### Verdicts", ""))]
    verdicts = verdict_rows(claims)
    out.append(Table("paper/verdicts", "Verdicts", verdicts) if len(verdicts)
               else Text(("No experiment of the store.",)))
    out += [Text(("", "### The paper's experiments the store lacks (not run)", "",
                  *_missing_lines(claims)))]
    return out


def _missing_lines(claims: pd.DataFrame) -> list[str]:
    lines = []
    for c in CLAIMS:
        sub = claims[(claims["claim"] == c.id) & (claims["reason"] == "not in the store")]
        names = list(dict.fromkeys(
            f"{r.dataset} {r.teacher_arch}/{r.student_arch}" + (f" ({r.attribute})"
                                                                if r.attribute else "")
            for r in sub.itertuples()))
        lines.append(f"- {c.id} ({c.statement}): " + (", ".join(names) if names else "none"))
    return lines


def _near_chance_line(stats: Statistics) -> list[str]:
    n, total = stats.near_chance["run_id"].nunique(), stats.runs["run_id"].nunique()
    return [f"- runs near chance (learned almost nothing): {n} of {total}; the means and "
            "verdicts include them (tables.md lists them)"] if n else []


def _epilogue(comparison: pd.DataFrame, claims: pd.DataFrame, counts: pd.DataFrame,
              near_chance: list[str]) -> list[Block]:
    done = comparison[comparison["status"] == "compared"]
    recipes = [f"- {study_name(d, s)}: kdray recipe {r}" for d, s, r in
               done[["dataset", "study", "recipe"]].drop_duplicates().itertuples(index=False)]
    per_table = ", ".join(f"{table}: {compared} of {n}" for table, n, compared, _ in
                          counts.itertuples(index=False, name=None))
    absent = claims["reason"] == "not in the store"
    tally = claims.loc[~absent, "verdict"].value_counts()
    out: list[Block] = [Text((
        "", f"## Beside the paper ({PAGE})", "", *recipes, *near_chance,
        f"- paper numbers the store has: {per_table}",
        "- verdicts on the store's experiments: "
        + ", ".join(f"{tally.get(v, 0)} {v}" for v in VERDICTS)
        + f"; {int(absent.sum())} more not run on the paper's experiments the store lacks", ""))]
    verdicts = verdict_rows(claims)
    if len(verdicts):
        out.append(Table("paper/verdicts", "Verdicts", verdicts))
    return out


def extend(report: Report, stats: Statistics) -> None:
    """Add the paper comparison's page, data tables and epilogue to ``report``."""
    comparison, claims = stats.paper_comparison, stats.claims
    counts = table_counts(comparison)
    blocks, shown = _compared_blocks(comparison)
    near_chance = _near_chance_line(stats)
    page: list[Block] = [
        Text(("# kdray beside the paper", "",
              "Every number of the paper's Tables 1, 2, 3, 5, 6, 7, 8 and 9 "
              "(analysis/paper_results.csv) that the store has: kdray's mean ± std over seeds "
              "(sample std; seeds: how many) beside the paper's as printed (mean ± std over "
              "its five seeds). #SC and #TC are counts. Each study's recipe is named where it "
              "differs from the paper's (Appendix C, as kdray's defaults implement it): a "
              "study on another recipe is not the paper's experiment. All cells, with the "
              "ones the store lacks (`not run`), are in paper_comparison.csv.",
              *(["", *near_chance] if near_chance else []), "",
              "## Cells compared", "")),
        Table("paper/table_counts", "The paper's numbers the store has, per table", counts),
        *blocks, *_claim_blocks(claims)]
    report.pages[PAGE] = page
    report.tables += [Table("paper_comparison", "kdray beside the paper, every cell",
                            comparison, "paper_comparison.csv"),
                      Table("paper_claims", "The paper's claims, verdicts", claims,
                            "paper_claims.csv"),
                      *[b for b in page if isinstance(b, Table)]]
    report.epilogue += _epilogue(comparison, claims, counts, near_chance)
    report.summary.update({f"claims_{v.replace(' ', '_')}": int((claims["verdict"] == v).sum())
                           for v in VERDICTS})
