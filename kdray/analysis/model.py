"""The table model: every table, text and figure of the analysis, built once, ready to render.

:func:`kdray.analysis.tables.build_report` fills a :class:`Report` from the statistics; the
renderers (:mod:`kdray.analysis.markdown`, :mod:`kdray.analysis.outputs`, :mod:`kdray.analysis.figures`,
:mod:`kdray.analysis.wandb_run`) only render it: they never group, filter or compute, and never
import the job. This module holds only the types, so every layer can import it.

- :class:`Table`: a title and a frame. Data tables (``significance.csv`` ...) name their
  output ``file``; paper-style tables hold display strings (``"68.39 ± 0.17"``).
- :class:`Text`: lines of ``tables.md`` between the tables.
- Figures (one dataclass per kind): the arrays to draw, the title and the labels, class
  names included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Table:
    """One table: ``name`` is its W&B key (unique), ``file`` its output file under ``{out}/``
    (``.csv`` or ``.parquet``; ``None`` for tables shown only in tables.md and W&B)."""

    name: str
    title: str
    frame: pd.DataFrame
    file: str | None = None


@dataclass(frozen=True)
class Text:
    """Lines of tables.md (headings, paragraphs, lists), rendered as they are."""

    lines: tuple[str, ...]


Block = Union[Text, Table]


@dataclass(frozen=True)
class Series:
    """One line of a figure: y (and optional error bars) over x, with its legend label."""

    label: str
    x: np.ndarray
    y: np.ndarray
    err: np.ndarray | None = None
    marked: np.ndarray | None = None  # bool per point: draw an ``×`` there
    marker: str = "o"


@dataclass(frozen=True)
class Reference:
    """A horizontal reference line (the teacher's or the NDS's value); NaN: not drawn.
    ``color`` (a matplotlib colour) and ``dotted`` set it apart from kdray's own lines."""

    label: str
    y: float
    dashed: bool = False
    dotted: bool = False
    color: str | None = None


@dataclass(frozen=True)
class Panel:
    """One axes: series on the left y axis, optional series and references on the right."""

    ylabel: str
    series: tuple[Series, ...]
    xlabel: str = "temperature T"
    xticks: np.ndarray | None = None
    references: tuple[Reference, ...] = ()
    right_ylabel: str = ""
    right_series: tuple[Series, ...] = ()
    right_references: tuple[Reference, ...] = ()
    legend_outside: bool = False


@dataclass(frozen=True)
class LineFigure:
    """Figs. 1, 3, 4, 5, 8, 9: one or more panels of lines against temperature."""

    name: str  # file name under figures/
    title: str
    panels: tuple[Panel, ...]
    size: tuple[float, float] = (6.0, 3.6)


@dataclass(frozen=True)
class Heatmap:
    """Fig. 2: a disagreement matrix (NaN cells, the diagonal, are not drawn)."""

    name: str
    title: str
    matrix: np.ndarray
    labels: tuple[str, ...] | None  # tick labels (class names), None: too many to show
    xlabel: str = "student prediction"
    ylabel: str = "teacher prediction"
    colorbar: str = "disagreements (mean over seeds)"


Figure = Union[LineFigure, Heatmap]


@dataclass
class Report:
    """The whole analysis as the renderers see it.

    ``blocks``: tables.md from top to bottom. ``tables``: every table (the paper-style ones
    of ``blocks`` too), each logged to W&B and, where it has a ``file``, written.
    ``figures``: every figure. ``manifest``: what the outputs were computed from (the cache
    check reads it back). ``config`` and ``summary``: the W&B run's config and summary.
    ``pages``: more Markdown files under ``{out}/`` (file name -> its blocks, e.g.
    ``paper_comparison.md``). ``epilogue``: what is printed after tables.md.
    """

    blocks: list[Block]
    tables: list[Table]
    figures: list[Figure]
    manifest: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    pages: dict[str, list[Block]] = field(default_factory=dict)
    epilogue: list[Block] = field(default_factory=list)
