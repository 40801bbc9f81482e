"""The paper's numbers as data: Tables 1, 2, 3, 5, 6, 7, 8 and 9 of "What's Left After
Distillation?" (Mohammadshahi & Ioannou), transcribed into ``kdray/analysis/paper_results.csv``.

One row per printed number: ``table`` (the paper's table number), ``dataset``,
``teacher_arch``, ``student_arch`` (kdray's registry names, the pair of the table's column
block), ``role`` (``teacher``, ``nds``, ``ds``), ``temperature`` (DS only), ``alpha`` (the
alpha of the column block; the teacher and NDS rows do not depend on it), ``metric``,
``attribute``, ``mean`` and ``std`` as printed (``std`` empty for #SC/#TC), ``notes``.

Metrics: ``test_accuracy`` (%), ``n_sc`` (#SC, DS vs NDS), ``n_tc`` (#TC, DS vs teacher),
``eod`` and ``dpd`` (%) w.r.t. ``attribute`` (kdray's ``attr_<name>`` names; empty for the
other metrics).

How the paper's tables map to kdray (the ``notes`` column says it on every row it concerns):

- Table 1 is Table 6's T = 2-10 rows; Table 7's alpha = 0.8 block is Table 1's
  ResNet-56/ResNet-20 block; Table 2's Trifeature (shape) column is Table 9's shape column at
  T = 1-10, and its CelebA (smiling) column Table 8's smiling column at T = 1-10. Each table
  keeps its own rows (every printed number once); :func:`paper_cells` merges the repeats.
- Table 5's header says ResNet-50 / ResNet-18 for SVHN; the text (Sec. 4) and Figure 1 say
  ResNet-56 / ResNet-20, which ``kdray.paper`` runs, so the rows name resnet56/resnet20.
- Tables 1 and 6 print ImageNet's accuracy as "Test Top-1 Acc."; it is ``test_accuracy``.
- Attributes: Trifeature's fairness is w.r.t. ``color`` (Table 2's caption). Table 9's
  caption says "with regard to the shape and texture attributes", which are its labels; its
  shape column repeats Table 2's, so its attribute is ``color``, and for its texture-label
  column (``trifeature-texture``) the attribute is *assumed* to be ``color`` too (the paper
  names none). CelebA: ``young`` (Tables 2 and 8's captions); Table 8's header names no
  metrics, its columns are read as Test Acc., EOD, DPD as in Table 2. HateXplain: ``gender``
  and ``race`` (Table 3), one test accuracy for both.
- Table 7's alpha = 0.6 block repeats the alpha = 0.8 block's teacher and NDS.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

FILE = "paper_results.csv"
COLUMNS = ["table", "dataset", "teacher_arch", "student_arch", "role", "temperature", "alpha",
           "metric", "attribute", "mean", "std", "notes"]
KEY = ["table", "dataset", "teacher_arch", "student_arch", "role", "temperature", "alpha",
       "metric", "attribute"]
METRICS = ("test_accuracy", "n_sc", "n_tc", "eod", "dpd")
FAIRNESS_METRICS = ("eod", "dpd")
ROLES = ("teacher", "nds", "ds")
# A cell of the paper: the row key less the table and (for teachers and NDS) alpha.
CELL = ["dataset", "teacher_arch", "student_arch", "role", "temperature", "alpha", "metric",
        "attribute"]


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    with resources.files("kdray.analysis").joinpath(FILE).open("r", encoding="utf-8") as f:
        df = pd.read_csv(f, dtype={"table": str, "attribute": str, "notes": str},
                         keep_default_na=False, na_values={"temperature": [""], "std": [""]})
    check(df)
    return df


def paper_results() -> pd.DataFrame:
    """Every transcribed number, one row per printed cell (a copy; see the module docstring)."""
    return _load().copy()


def check(df: pd.DataFrame) -> None:
    """The transcription's invariants: its columns, known roles and metrics, numbers where
    numbers belong, and each (table, cell) once. Raises ``ValueError`` naming the rows."""
    if list(df.columns) != COLUMNS:
        raise ValueError(f"{FILE}: columns {list(df.columns)}; expected {COLUMNS}")
    bad = df[~df["role"].isin(ROLES) | ~df["metric"].isin(METRICS)
             | ((df["role"] == "ds") != df["temperature"].notna())
             | (df["metric"].isin(FAIRNESS_METRICS) != (df["attribute"] != ""))
             | df["mean"].isna() | (df["metric"].isin(("n_sc", "n_tc")) & df["std"].notna())]
    if len(bad):
        raise ValueError(f"{FILE}: malformed row(s) {bad.index.tolist()[:10]}; expected a role "
                         f"in {ROLES}, a metric in {METRICS}, a temperature exactly on DS rows, "
                         "an attribute exactly on EOD/DPD rows, a mean, no std on #SC/#TC")
    dup = df[df.duplicated(KEY, keep=False)]
    if len(dup):
        raise ValueError(f"{FILE}: row(s) {dup.index.tolist()[:10]} repeat a (table, cell)")


def paper_cells() -> pd.DataFrame:
    """One row per distinct cell of the paper (:data:`CELL`), the tables that print it in
    ``tables`` (``"2, 9"``): teacher and NDS rows get ``alpha`` NaN (a teacher is the same run
    at every alpha). Raises ``ValueError`` if two tables print different numbers for a cell."""
    df = _load().copy()
    df.loc[df["role"] != "ds", "alpha"] = float("nan")
    rows = []
    for key, sub in df.groupby(CELL, dropna=False, sort=False):
        if sub[["mean", "std"]].drop_duplicates().shape[0] > 1:
            raise ValueError(f"{FILE}: tables {sorted(set(sub['table']))} print different "
                             f"numbers for the cell {dict(zip(CELL, key))}")
        tables = ", ".join(sorted(set(sub["table"]), key=int))
        notes = "; ".join(dict.fromkeys(  # less the cross-references that ``tables`` says
            part for n in sub["notes"] for part in n.split("; ")
            if part and not part.startswith(("= Table", "the alpha = 0.8 block"))))
        rows.append({**dict(zip(CELL, key)), "mean": sub["mean"].iloc[0],
                     "std": sub["std"].iloc[0], "tables": tables, "notes": notes})
    return pd.DataFrame(rows)
