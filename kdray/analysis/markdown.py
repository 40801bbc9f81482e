"""Render the table model as ``tables.md`` (what the job prints at the end)."""

from __future__ import annotations

from kdray.analysis.model import Block, Report, Table, Text


def table_lines(table: Table) -> list[str]:
    """A Markdown pipe table: the frame's columns as the header, its cells as text."""
    header = [str(c) for c in table.frame.columns]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |"
            for row in table.frame.itertuples(index=False, name=None)]
    return out


def render(report: Report) -> str:
    """The whole of ``tables.md``: the report's blocks from top to bottom."""
    return render_blocks(report.blocks)


def render_blocks(blocks: list[Block]) -> str:
    """Blocks as Markdown, top to bottom (tables.md, a page, the epilogue); "" for none."""
    lines: list[str] = []
    for block in blocks:
        lines += list(block.lines) if isinstance(block, Text) else table_lines(block)
    return "\n".join(lines) + "\n" if lines else ""
