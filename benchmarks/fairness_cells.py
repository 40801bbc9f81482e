"""fairlearn's MetricFrame on a run's rows one by one, against the same MetricFrame on the
rows' distinct cells weighted by their counts (what ``kdray.analysis.fairness`` does), side by side.

One Trifeature-sized run (10 classes, 10 groups, 30,000 test samples, 97 % accuracy) is
stacked into its 10 one-vs-rest problems (300,000 rows). Both ways give per (group, class)
selection rate, TPR and FPR; the script checks they are bit-identical, then prints the
seconds of each (best of ``--repeat``) and their ratio.

    python benchmarks/fairness_cells.py
    python benchmarks/fairness_cells.py --samples 3000 --repeat 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from kdray.cli_help import command_parser, description_of
from kdray.analysis.fairness import _fairlearn_rates


def rows_one_by_one(y_true: np.ndarray, y_pred: np.ndarray, sensitive: np.ndarray,
                    classes: np.ndarray) -> dict[str, np.ndarray]:
    """The per (group, class) rates from a MetricFrame over every stacked row."""
    from fairlearn.metrics import (MetricFrame, false_positive_rate, selection_rate,
                                   true_positive_rate)

    cls = np.repeat(classes, len(y_true))
    mf = MetricFrame(metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                              "fpr": false_positive_rate},
                     y_true=(np.tile(y_true, len(classes)) == cls).astype(int),
                     y_pred=(np.tile(y_pred, len(classes)) == cls).astype(int),
                     sensitive_features=pd.Series(np.tile(sensitive, len(classes)), name="group"),
                     control_features=pd.Series(cls, name="class"))
    groups = np.unique(sensitive)
    return {k: mf.by_group[k].unstack("class").reindex(index=groups, columns=classes)
            .to_numpy(dtype=float) for k in ("selection_rate", "tpr", "fpr")}


def best_of(repeat: int, fn, *args) -> tuple[float, dict]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), out


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/fairness_cells.py", description_of(__doc__))
    p.add_argument("--samples", type=int, default=30_000, help="test samples of the run")
    p.add_argument("--repeat", type=int, default=3, help="timings of each way, the best kept")
    return p


def main() -> None:
    args = parser().parse_args()
    rng = np.random.default_rng(0)
    classes = np.arange(10)
    y = rng.permutation(np.arange(args.samples) % 10)
    group = rng.integers(0, 10, args.samples)
    pred = np.where(rng.random(args.samples) < 0.97, y, rng.integers(0, 10, args.samples))
    t_rows, rows = best_of(args.repeat, rows_one_by_one, y, pred, group, classes)
    t_cells, cells = best_of(args.repeat, _fairlearn_rates, y, pred, group, classes)
    # where a rate is 0/0, fairlearn says 0.0 and analysis.fairness NaN (its module docstring)
    same = all(np.array_equal(rows[k], np.nan_to_num(cells[k], nan=0.0)) for k in rows)
    if not same:
        raise SystemExit("the two ways differ: the weighted cells are not the rows' rates")
    print(f"{args.samples:,} samples x {len(classes)} classes, {len(np.unique(group))} groups: "
          f"rates bit-identical")
    print(f"MetricFrame, rows one by one:  {t_rows:8.3f} s")
    print(f"MetricFrame, weighted cells:   {t_cells:8.3f} s")
    print(f"ratio: {t_rows / t_cells:.1f}x")


if __name__ == "__main__":
    main()
