"""Render the table model's figures with matplotlib (Agg backend): PNG bytes per file name.

Only drawing happens here: the data, titles and labels (class names) come from
:mod:`kdray.analysis.figure_data`. Every figure uses constrained layout and a wrapped title
(``suptitle(wrap=True)``), so titles and legends stay inside the figure whatever their length;
the PNG carries the title in its ``Title`` text chunk.
"""

from __future__ import annotations

import io

import numpy as np

from kdray.analysis.model import Figure, Heatmap, LineFigure, Reference, Series

DPI = 110
TITLE_SIZE = 9


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(ax, s: Series, color: str) -> None:
    if s.err is not None:
        ax.errorbar(s.x, s.y, yerr=s.err, marker=s.marker, color=color, label=s.label)
    else:
        ax.plot(s.x, s.y, marker=s.marker, color=color, label=s.label)
    if s.marked is not None and s.marked.any():
        ax.scatter(s.x[s.marked], s.y[s.marked], marker="x", s=60, color=color)


def _reference(ax, r: Reference) -> None:
    if np.isfinite(r.y):
        ax.axhline(r.y, linestyle=":" if r.dotted else "--" if r.dashed else "-",
                   color=r.color or ("gray" if r.dashed else "black"), linewidth=1,
                   label=r.label)


def _lines(spec: LineFigure):
    plt = _plt()
    fig, axes = plt.subplots(1, len(spec.panels), figsize=spec.size, layout="constrained",
                             squeeze=False)
    for ax, p in zip(axes[0], spec.panels):
        for i, s in enumerate(p.series):
            _series(ax, s, f"C{i}")
        for r in p.references:
            _reference(ax, r)
        ax.set_xlabel(p.xlabel)
        if p.xticks is not None:
            ax.set_xticks(p.xticks, [f"{t:g}" for t in p.xticks])
        ax.set_ylabel(p.ylabel)
        handles, labels = ax.get_legend_handles_labels()
        if p.right_series or p.right_references:
            ax2 = ax.twinx()
            for j, s in enumerate(p.right_series):
                _series(ax2, s, f"C{len(p.series) + j}")
            for r in p.right_references:
                _reference(ax2, r)
            ax2.set_ylabel(p.right_ylabel)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if p.legend_outside:
            fig.legend(handles, labels, loc="outside right center", fontsize=7,
                       ncol=2 if len(labels) > 10 else 1)
        else:
            ax.legend(handles, labels, fontsize=7, loc="best")
    return fig


def _heatmap(spec: Heatmap):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(spec.matrix), cmap="viridis")
    if spec.labels is not None:
        ticks = range(len(spec.labels))
        long = max(len(label) for label in spec.labels) > 3
        ax.set_xticks(ticks, spec.labels, fontsize=7, rotation=90 if long else 0)
        ax.set_yticks(ticks, spec.labels, fontsize=7)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel(spec.ylabel)
    fig.colorbar(im, ax=ax, label=spec.colorbar)
    return fig


def draw(spec: Figure):
    """The matplotlib figure of one table-model figure (the caller closes it)."""
    fig = _heatmap(spec) if isinstance(spec, Heatmap) else _lines(spec)
    fig.suptitle(spec.title, fontsize=TITLE_SIZE, wrap=True)
    return fig


def render(spec: Figure) -> bytes:
    """PNG bytes of one figure, its title in the PNG's ``Title`` text chunk."""
    fig = draw(spec)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Title": spec.title})
    finally:
        _plt().close(fig)
    return buf.getvalue()


def render_all(figures: list[Figure]) -> dict[str, bytes]:
    """``{file name under figures/: PNG bytes}`` for every figure of the report."""
    return {spec.name: render(spec) for spec in figures}
