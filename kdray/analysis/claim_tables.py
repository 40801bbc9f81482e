"""The table model of the claims' verdicts (``paper_comparison.md`` and the printed summary).

- :func:`verdict_rows`: one display row per verdict of the store's experiments: the effect
  with its 95 % interval over seeds, the seeds, the raw and the Holm-adjusted p, the
  verdict (``inconclusive (collapsed runs)`` where collapsed runs decided it), the seeds an
  inconclusive row's effect would need for 80 % power, and the reason;
- :func:`shape_table`: beside the trend verdicts, the per-T means with their intervals, one
  row per metric;
- :func:`tally_lines`: the verdicts counted, one line per family (``kdray/analysis/verdicts.py``);
- :func:`control_lines`: where a DS is indistinguishable from its matched control (C9), the
  plain sentence that says so;
- :func:`claim_blocks`: the page's section with the rules, the verdicts, the shapes and the
  paper's experiments the store lacks.
"""

from __future__ import annotations

import math

import pandas as pd

from kdray.analysis.claims import CLAIMS, COLLAPSED, CONTROL_CLAIM, VERDICTS
from kdray.analysis.groups import study_name
from kdray.analysis.model import Block, Table, Text
from kdray.analysis.seed_tests import MIN_SEEDS
from kdray.analysis.tables import DASH
from kdray.analysis.verdicts import FAMILIES, FAMILY_NAMES, LEVEL, MAX_SEEDS

VERDICT_HEADER = ["claim", "experiment", "attribute", "metric", "T", "effect [95% CI]",
                  "seeds", "p", "p Holm", "verdict", "seeds for 80% power", "reason"]
ABSENT = "not in the store"
UNIT_LABELS = {"rho": "ρ", "accuracy points": "pts", "EOD points": "pts", "DPD points": "pts"}


def experiment_name(r) -> str:
    return (f"{study_name(r.dataset, r.study)} {r.teacher_arch}/{r.student_arch} "
            f"alpha={r.alpha:g}")


def _p(x: float) -> str:
    return DASH if pd.isna(x) else f"{x:.3g}"


def _effect(r) -> str:
    if pd.isna(r.effect):
        return DASH
    unit = UNIT_LABELS.get(r.effect_unit, "")
    ci = (f" [{r.effect_low:+.2f}, {r.effect_high:+.2f}]" if not pd.isna(r.effect_low)
          else "")
    return f"{r.effect:+.2f}{ci} {unit}".strip()


def _seeds(r) -> str:
    if pd.isna(r.n):
        return DASH
    lost = 0 if pd.isna(r.n_collapsed) else int(r.n_collapsed)
    return f"{r.n:.0f}" + (f" ({lost} run(s) collapsed)" if lost else "")


def _power(x: float) -> str:
    if pd.isna(x):
        return DASH
    return f"> {MAX_SEEDS}" if math.isinf(x) else f"{x:.0f}"


def verdict_text(verdict: str, reason: str) -> str:
    """The verdict as shown: ``inconclusive (collapsed runs)`` where they decided it."""
    return (f"{verdict} ({COLLAPSED})" if verdict == "inconclusive"
            and str(reason).startswith(COLLAPSED) else verdict)


def verdict_rows(claims: pd.DataFrame) -> pd.DataFrame:
    """The verdicts of the store's experiments as display strings (:data:`VERDICT_HEADER`);
    ``*`` marks kdray's own rows (a family of their own)."""
    rows = []
    for r in claims[claims["reason"] != ABSENT].itertuples():
        rows.append([r.claim + ("" if r.in_paper else "*"), experiment_name(r),
                     r.attribute or DASH, r.metric, r.temperatures or DASH, _effect(r),
                     _seeds(r), _p(r.pvalue), _p(r.pvalue_holm),
                     verdict_text(r.verdict, r.reason), _power(r.seeds_for_power),
                     r.reason or DASH])
    return pd.DataFrame(rows, columns=VERDICT_HEADER)


def _interval(r) -> str:
    if pd.isna(r.mean):
        return DASH
    if r.metric in ("n_sc", "n_tc"):
        return f"{r.mean:.0f}"
    ci = f" [{r.low:.2f}, {r.high:.2f}]" if not pd.isna(r.low) else ""
    return f"{r.mean:.2f}{ci}"


def shape_table(shapes: pd.DataFrame, claims: pd.DataFrame, name: str) -> Table | None:
    """The per-T means (95 % t interval over seeds; #SC/#TC: counts) of every tested trend
    row, one row per (claim, experiment, attribute, metric), beside its verdict."""
    if shapes.empty:
        return None
    temps = sorted(shapes["temperature"].unique())
    keys = ["claim", "dataset", "study", "teacher_arch", "student_arch", "alpha", "attribute",
            "metric"]
    verdicts = {tuple(getattr(r, k) for k in keys): (r.verdict, r.reason, r.in_paper)
                for r in claims.itertuples()}
    rows = []
    for key, sub in shapes.groupby(keys, sort=False):
        verdict, reason, in_paper = verdicts[key]
        first = sub.iloc[0]
        cells = {r.temperature: _interval(r) for r in sub.itertuples()}
        rows.append([key[0] + ("" if in_paper else "*"), experiment_name(first),
                     key[6] or DASH, key[7], verdict_text(verdict, reason)]
                    + [cells.get(t, DASH) for t in temps])
    header = ["claim", "experiment", "attribute", "metric", "verdict"] + [f"T={t:g}"
                                                                          for t in temps]
    return Table(name, "The trends per T (mean over seeds [95% CI])",
                 pd.DataFrame(rows, columns=header))


def tally_lines(claims: pd.DataFrame) -> list[str]:
    """The verdicts counted, one line per family (study and kind), then the paper's
    experiments the store lacks."""
    absent = claims["reason"] == ABSENT
    lines = []
    present = claims[~absent].assign(_f=claims["family"].map(FAMILIES.index))
    for (dataset, study, _, family), sub in present.groupby(
            ["dataset", "study", "_f", "family"], sort=True):
        shown = sub["verdict"].where(~sub["reason"].str.startswith(COLLAPSED)
                                     | (sub["verdict"] != "inconclusive"),
                                     f"inconclusive ({COLLAPSED})")
        counts = shown.value_counts()
        words = list(VERDICTS[:3]) + [f"inconclusive ({COLLAPSED})"] + list(VERDICTS[3:])
        lines.append(f"- {study_name(dataset, study)}, {FAMILY_NAMES[family]} (Holm over "
                     f"{int(sub['family_size'].iloc[0])} tested): " + ", ".join(
                         f"{counts.get(v, 0)} {v}" for v in words if counts.get(v, 0)
                         or v in VERDICTS[:3]))
    lines.append(f"- {int(absent.sum())} more not run: the paper's experiments the store "
                 "lacks")
    return lines


INDISTINGUISHABLE = "at high T this study's DS is what its step size alone gives"


def control_lines(claims: pd.DataFrame) -> list[str]:
    """One plain sentence per C9 row whose DS is indistinguishable from its control: tested
    (enough seeds, no collapsed cell) and inconclusive (docs/claims.md, C9)."""
    rows = claims[(claims["claim"] == CONTROL_CLAIM) & (claims["verdict"] == "inconclusive")
                  & ~claims["reason"].astype(str).str.startswith(COLLAPSED)
                  & (claims["n"].astype(float) >= MIN_SEEDS)]
    return [f"- {experiment_name(r)}, {r.metric}" + (f" ({r.attribute})" if r.attribute else "")
            + f": {INDISTINGUISHABLE} (DS minus control {_effect(r)}, {r.n:.0f} seeds, "
            f"p Holm {_p(r.pvalue_holm)}; the interval bounds what the seeds still allow)"
            for r in rows.itertuples()]


def _control_blocks(claims: pd.DataFrame) -> list[Block]:
    lines = control_lines(claims)
    if not lines:
        return []
    return [Text(("", "### The DS beside its matched control (C9)", "",
                  "Where the DS at T = 8-10 is indistinguishable from its control (the NDS "
                  "at lr x (1 - alpha), weight decay / (1 - alpha)):", "", *lines))]


def _missing_lines(claims: pd.DataFrame) -> list[str]:
    lines = []
    for c in (c for c in CLAIMS if c.scope):
        sub = claims[(claims["claim"] == c.id) & (claims["reason"] == ABSENT)]
        names = list(dict.fromkeys(
            f"{r.dataset} {r.teacher_arch}/{r.student_arch}" + (f" ({r.attribute})"
                                                                if r.attribute else "")
            for r in sub.itertuples()))
        lines.append(f"- {c.id} ({c.statement}): " + (", ".join(names) if names else "none"))
    return lines


RULES_TEXT = (
    "The rules are fixed in docs/claims.md. The seed is the unit: each seed is reduced to "
    "one number (a paired difference, DS minus its own NDS, teacher or control; or "
    "Spearman's ρ of T vs the metric over its DS runs), and a t-test across seeds judges it (#SC/#TC: ρ of T "
    "vs the count per T, T permuted within seeds). Collapsed runs are out. One Holm "
    f"correction per family: the paper's claims, and kdray's rows beyond its scope (*: an "
    f"experiment, alpha or attribute the paper does not state the claim on). reproduced: "
    f"the paper's sign at p Holm <= {LEVEL:g}; contradicted: the opposite sign at p Holm <= "
    f"{LEVEL:g}; inconclusive: neither, or degenerate data (the reason says which), or "
    "(collapsed runs) a cell that lost more than one seed; not testable here: the reference "
    "sits at the metric's floor or ceiling in every seed; not run: the data is missing. "
    "effect: mean over seeds (points, or ρ) with its 95 % t interval; seeds for 80% power: "
    "what an inconclusive row's effect would need at 0.05 / (the family's size). C9* is "
    "kdray's own (no paper claim): its sign is the one the paper gives distillation.")


def claim_blocks(claims: pd.DataFrame, shapes: pd.DataFrame) -> list[Block]:
    """paper_comparison.md's section on the claims."""
    rules = pd.DataFrame([[c.id, c.statement, c.source, c.rule] for c in CLAIMS],
                         columns=["claim", "statement", "source", "rule"])
    out: list[Block] = [
        Text(("", "## The paper's claims, judged by rules fixed before the runs", "",
              RULES_TEXT, "")),
        Table("paper/claim_rules", "The paper's claims and their rules", rules),
        Text(("", "### Verdicts", "", *tally_lines(claims), ""))]
    verdicts = verdict_rows(claims)
    out.append(Table("paper/verdicts", "Verdicts", verdicts) if len(verdicts)
               else Text(("No experiment of the store.",)))
    out += _control_blocks(claims)
    shape = shape_table(shapes, claims, "paper/trend_shapes")
    if shape is not None:
        out += [Text(("", "### The trends per T, beside their verdicts", "",
                      "Mean over seeds [95% t interval] at each T (#SC, #TC: the count):", "")),
                shape]
    out += [Text(("", "### The paper's experiments the store lacks (not run)", "",
                  *_missing_lines(claims)))]
    return out
