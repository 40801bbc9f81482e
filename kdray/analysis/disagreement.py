"""Disagreement matrices (paper eq. 7, Fig. 2): where do teacher and student predictions differ?

For models ``f`` (the teacher) and ``g`` (a student) and test samples ``x_n``,

    CMP(f(x_n), g(x_n)) = 0 if f(x_n) = g(x_n), 1 otherwise                  (eq. 7)

and the disagreement matrix counts, for every ordered pair of classes ``i != j``, the samples
with CMP = 1, f(x_n) = i and g(x_n) = j:

    D[i, j] = Σ_n 1[f(x_n) = i] · 1[g(x_n) = j],   i != j;   D[i, i] = 0.

Seed ``k`` of a student is paired with seed ``k`` of the teacher (DS seed k distils from
teacher seed k); the matrices of the paired seeds are averaged. One comparison (teacher vs
NDS of a teacher/student pair, or teacher vs DS at one T and alpha) is one Ray Data task
that reads only ``sample_index`` and ``pred`` of its runs and returns the averaged matrix in
sparse form, so memory is bounded by classes², never by rows. Written as
``disagreement/<name>.csv`` with columns ``teacher_pred, student_pred, mean_count, n_seeds``
(non-zero cells only).
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from kdray.store import PREDICTIONS, Store

DISAGREEMENT_COLUMNS = ["teacher_pred", "student_pred", "mean_count", "n_seeds"]


def disagreement_counts(f_pred: np.ndarray, g_pred: np.ndarray) -> pd.DataFrame:
    """Sparse D of eq. 7 for one pair of aligned prediction vectors: columns i, j, count."""
    f_pred, g_pred = np.asarray(f_pred, np.int64), np.asarray(g_pred, np.int64)
    if f_pred.shape != g_pred.shape:
        raise ValueError(f"disagreement: {len(f_pred)} vs {len(g_pred)} predictions")
    off = f_pred != g_pred
    if not off.any():
        return pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64),
                             "count": np.zeros(0, np.int64)})
    pairs, n = np.unique(np.stack([f_pred[off], g_pred[off]], axis=1), axis=0,
                         return_counts=True)
    return pd.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1], "count": n.astype(np.int64)})


def mean_disagreement(matrices: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Average of sparse matrices (a cell missing from a matrix counts as 0 there)."""
    mats = list(matrices)
    if not mats:
        return pd.DataFrame(columns=DISAGREEMENT_COLUMNS)
    s = pd.concat(mats).groupby(["i", "j"], sort=True)["count"].sum()
    return pd.DataFrame({"teacher_pred": s.index.get_level_values(0).astype(np.int64),
                         "student_pred": s.index.get_level_values(1).astype(np.int64),
                         "mean_count": s.to_numpy() / len(mats), "n_seeds": len(mats)})


def to_dense(df: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    """Dense [K, K] matrix over ``classes`` (rows: teacher's prediction) from the sparse form."""
    classes = np.asarray(classes)
    pos = {int(c): k for k, c in enumerate(classes)}
    out = np.zeros((len(classes), len(classes)))
    for i, j, v in zip(df["teacher_pred"], df["student_pred"], df["mean_count"]):
        if int(i) in pos and int(j) in pos:
            out[pos[int(i)], pos[int(j)]] = v
    return out


def _aligned_pred(store: Store, run_id: str, sha: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = store.read_verified_predictions(run_id, sha)
    except ValueError:
        raise ValueError(f"run {run_id}: {PREDICTIONS} changed while the analysis ran") from None
    t = pq.read_table(io.BytesIO(data), columns=["sample_index", "pred"])
    idx, pred = t["sample_index"].to_numpy(), t["pred"].to_numpy()
    order = np.argsort(idx, kind="stable")
    return idx[order], pred[order]


def comparison_task(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data map: one comparison = the paired seeds in ``row["pairs"]`` (JSON)."""
    mats = []
    for _seed, f, g, f_sha, g_sha in json.loads(row["pairs"]):
        f_idx, f_pred = _aligned_pred(store, f, f_sha)
        g_idx, g_pred = _aligned_pred(store, g, g_sha)
        if not np.array_equal(f_idx, g_idx):
            raise ValueError(f"runs {f} and {g} were evaluated on different test samples")
        mats.append(disagreement_counts(f_pred, g_pred))
    return {"name": row["name"], "payload": pickle.dumps(mean_disagreement(mats))}


def run_comparisons(store: Store, comparisons: list[dict[str, Any]],
                    progress: bool = False) -> dict[str, pd.DataFrame]:
    """Run every comparison on Ray Data; ``{name: averaged sparse matrix}``.

    ``comparisons``: dicts with ``name`` and ``pairs`` = [(seed, f_run, g_run, f_sha, g_sha)].
    """
    import ray.data

    from kdray.analysis._ray import progress_bars

    if not comparisons:
        return {}
    items = [{"name": c["name"], "pairs": json.dumps(c["pairs"])} for c in comparisons]
    out = {}
    with progress_bars(progress):
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        for row in ds.map(lambda r: comparison_task(store, r)).iter_rows():
            out[row["name"]] = pickle.loads(row["payload"])
    return {c["name"]: out[c["name"]] for c in comparisons}
