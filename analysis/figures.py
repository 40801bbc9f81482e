"""The paper's figures, where the data exists (matplotlib, Agg backend; PNG bytes).

- ``*_class_accuracy.png`` (Fig. 1): DS class-wise test accuracy vs T, mean over seeds, one
  line per class, ``×`` where DS vs NDS is significant; only for <= 20 classes.
- ``*_significance.png`` (Figs. 3, 8): #SC and #TC vs T, and DS test accuracy (mean ± std)
  vs T with the teacher's and the NDS's accuracy as horizontal reference lines.
- ``*_fairness_<attribute>.png`` (Figs. 4, 5, 9): EOD and DPD (%) vs T for the DS
  (mean ± std), teacher and NDS as horizontal reference lines.
- ``*_disagreement_*.png`` (Fig. 2): teacher vs NDS / teacher vs DS heatmaps, diagonal
  excluded; only for <= 200 classes (a larger heatmap is unreadable; the CSV has it all).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from analysis.disagreement import to_dense
from analysis.report import slug

if TYPE_CHECKING:
    from analysis.job import AnalysisResult

MAX_CLASSES_FIG1 = 20
MAX_CLASSES_HEATMAP = 200


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _ref_line(ax, y: float, label: str, style: str) -> None:
    if np.isfinite(y):
        ax.axhline(y, linestyle=style, color="gray" if style == "--" else "black",
                   linewidth=1, label=label)


def _temperature_axis(ax, temps: np.ndarray) -> None:
    ax.set_xlabel("temperature T")
    if len(temps) <= 16:
        ax.set_xticks(temps, [f"{t:g}" for t in temps])


def _family_title(e) -> str:
    study = f" [{e.study}]" if e.study else ""
    return f"{e.dataset}{study}: {e.teacher_arch} / {e.student_arch}, alpha={e.alpha:g}"


def make_figures(result: "AnalysisResult", counts: dict) -> dict[str, bytes]:
    """``{file name under figures/: PNG bytes}`` for every figure the data supports."""
    plt = _plt()
    out: dict[str, bytes] = {}
    acc = result.runs.set_index("run_id")["test_accuracy"] * 100.0
    sig, cls = result.significance, result.class_tests
    tables: dict[tuple, list] = {}
    for e in result.experiments:
        tables.setdefault(e.family + (e.alpha,), []).append(e)
    for exps in tables.values():
        e0, temps = exps[0], np.array([e.temperature for e in exps])
        name = slug(e0.dataset, e0.study, f"{e0.teacher_arch}-{e0.student_arch}", f"a{e0.alpha:g}")
        teacher_acc = acc.loc[list(e0.teacher)].mean() if e0.teacher else np.nan
        nds_acc = acc.loc[list(e0.nds)].mean() if e0.nds else np.nan

        # Figs. 3 / 8: significant-class counts and DS accuracy vs T
        fig, ax = plt.subplots(figsize=(6, 3.6))
        sel = sig[(sig["dataset"] == e0.dataset) & (sig["study"] == e0.study)
                  & (sig["teacher_arch"] == e0.teacher_arch)
                  & (sig["student_arch"] == e0.student_arch) & (sig["alpha"] == e0.alpha)]
        for comp, label, marker in (("ds_vs_nds", "#SC (DS vs NDS)", "o"),
                                    ("ds_vs_teacher", "#TC (DS vs teacher)", "s")):
            s = sel[sel["comparison"] == comp].sort_values("temperature")
            ax.plot(s["temperature"], s["n_significant"], marker=marker, label=label)
        _temperature_axis(ax, temps)
        ax.set_ylabel(f"significant classes (p <= {result.level:g})")
        ax2 = ax.twinx()
        ds_m = np.array([acc.loc[list(e.ds)].mean() for e in exps])
        ds_s = np.array([acc.loc[list(e.ds)].std(ddof=1) if len(e.ds) > 1 else 0 for e in exps])
        ax2.errorbar(temps, ds_m, yerr=ds_s, color="tab:green", marker="^", label="DS test acc.")
        _ref_line(ax2, teacher_acc, "teacher acc.", "-")
        _ref_line(ax2, nds_acc, "NDS acc.", "--")
        ax2.set_ylabel("test accuracy (%)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
        ax.set_title(_family_title(e0), fontsize=9)
        out[f"{name}_significance.png"] = _png(fig)

        # Fig. 1: class-wise DS accuracy vs T with significance marks
        classes = counts[e0.ds[0]][0]
        if len(classes) <= MAX_CLASSES_FIG1:
            fig, ax = plt.subplots(figsize=(6, 3.6))
            per_t = np.stack([np.mean([100.0 * counts[r][1] / counts[r][2] for r in e.ds], axis=0)
                              for e in exps])  # [T, K]
            for k, c in enumerate(classes):
                line, = ax.plot(temps, per_t[:, k], marker=".", label=f"class {c}")
                hit = cls[(cls["dataset"] == e0.dataset) & (cls["study"] == e0.study)
                          & (cls["teacher_arch"] == e0.teacher_arch)
                          & (cls["student_arch"] == e0.student_arch)
                          & (cls["alpha"] == e0.alpha) & (cls["comparison"] == "ds_vs_nds")
                          & (cls["class"] == c) & (cls["pvalue"] <= result.level)]
                mark = np.isin(temps, hit["temperature"].to_numpy())
                ax.scatter(temps[mark], per_t[mark, k], marker="x", s=60, color=line.get_color())
            _temperature_axis(ax, temps)
            ax.set_ylabel("class test accuracy (%)")
            ax.set_title(_family_title(e0) + "  (× significant DS vs NDS)", fontsize=9)
            ax.legend(fontsize=6, ncol=2, loc="best")
            out[f"{name}_class_accuracy.png"] = _png(fig)

        # Figs. 4 / 5 / 9: EOD and DPD vs T per attribute
        fair = result.fairness
        fsub = fair[(fair["dataset"] == e0.dataset) & (fair["study"] == e0.study)]
        for attr in sorted(fsub["attribute"].unique()):
            a = fsub[fsub["attribute"] == attr]
            ds = a[(a["role"] == "ds") & (a["arch"] == e0.student_arch)
                   & (a["teacher_arch"] == e0.teacher_arch) & (a["alpha"] == e0.alpha)
                   ].sort_values("temperature")
            if ds.empty:
                continue
            fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
            for ax, metric in zip(axes, ("eod", "dpd")):
                ax.errorbar(ds["temperature"], ds[f"{metric}_mean"],
                            yerr=ds[f"{metric}_std"].fillna(0), marker="o", label="DS")
                for role, arch, style in (("teacher", e0.teacher_arch, "-"),
                                          ("nds", e0.student_arch, "--")):
                    ref = a[(a["role"] == role) & (a["arch"] == arch)]
                    _ref_line(ax, ref[f"{metric}_mean"].iloc[0] if len(ref) else np.nan,
                              "teacher" if role == "teacher" else "NDS", style)
                _temperature_axis(ax, ds["temperature"].to_numpy())
                ax.set_ylabel(f"{metric.upper()} (%)")
                ax.legend(fontsize=7)
            fig.suptitle(f"{_family_title(e0)} — attribute {attr}", fontsize=9)
            out[f"{name}_fairness_{slug(attr)}.png"] = _png(fig)
    return out


def disagreement_heatmap(df, classes: np.ndarray, title: str) -> bytes | None:
    """Fig. 2-style heatmap (rows: teacher's prediction; columns: the student's)."""
    if len(classes) > MAX_CLASSES_HEATMAP:
        return None
    plt = _plt()
    m = to_dense(df, classes)
    np.fill_diagonal(m, np.nan)  # the diagonal is agreement, excluded as in Fig. 2
    fig, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis")
    if len(classes) <= 20:
        ax.set_xticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
        ax.set_yticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
    ax.set_xlabel("student prediction")
    ax.set_ylabel("teacher prediction")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="disagreements (mean over seeds)")
    return _png(fig)
