"""A study's results page, written from its store: the analysis's tables and verdicts, the
fairness figures, and a header saying where, when and on what code the runs trained.

    python -m kdray.analysis.results_page --store ./results --out docs/results/quick.md
    python -m kdray.analysis.results_page --store ./results --out docs/results/quick.md \\
        --readme README.md       # and README's copy of its verdicts

The page is the analysis as the job wrote it (``{store}/analysis``: run the analysis first);
nothing is recomputed. The header comes from the runs' own ``run.json``: their hosts and
devices, the code version they ran, their first start and last finish. Figures are copied
beside the page (``docs/results/quick/``).

README shows a page's verdicts between two markers, ``<!-- verdicts: docs/results/quick.md -->``
and ``<!-- /verdicts -->``; ``--readme`` replaces what is between them with the page's
verdicts, and :func:`readme_problems` says where a README's copy differs from its page.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from kdray.collapse import collapse_reason
from kdray.store import Store, redact

TABLES, COMPARISON, FIGURES = "tables.md", "paper_comparison.md", "figures"
FIGURE_KINDS = ("_fairness_",)  # the paper's Figure 4: EOD and DPD against T, per attribute
GENERATED = "<!-- written by python -m kdray.analysis.results_page from the store; do not edit -->"
MARKER = re.compile(r"<!-- verdicts: (?P<page>\S+) -->\n(?P<body>.*?)<!-- /verdicts -->",
                    re.S)


@dataclass(frozen=True)
class PageOptions:
    """Where the page comes from and goes: the store, its analysis (default
    ``{store}/analysis``), the page's path, and a README whose verdicts to update."""

    out: str  # the page, e.g. docs/results/<study>.md
    store: str = "./results"
    analysis: str | None = None
    readme: str | None = None


# ----------------------------------------------------------------------------------------
# The header: what the runs' run.json say about where and how they ran
# ----------------------------------------------------------------------------------------
def run_records(store: Store) -> list[dict]:
    """Every committed run's run.json (runs without one are not complete, and not shown)."""
    records = (store.read_run_json(run_id) for run_id in store.list_run_ids())
    return [r for r in records if r]


def _span(records: list[dict]) -> tuple[str, str, str]:
    starts = [dt.datetime.fromisoformat(r["started"]) for r in records if r.get("started")]
    ends = [dt.datetime.fromisoformat(r["finished"]) for r in records if r.get("finished")]
    if not starts or not ends:
        return "–", "–", "–"
    wall = max(ends) - min(starts)
    minutes, seconds = divmod(round(wall.total_seconds()), 60)
    fmt = "%Y-%m-%d %H:%M UTC"
    return min(starts).strftime(fmt), max(ends).strftime(fmt), f"{minutes}m{seconds:02d}s"


def _counted(values) -> str:
    return "; ".join(f"{v} ({n} runs)" for v, n in sorted(collections.Counter(values).items()))


def header_rows(store: Store, records: list[dict]) -> list[tuple[str, str]]:
    """(field, value) rows of the page's header."""
    roles = collections.Counter(r.get("spec", {}).get("role", "?") for r in records)
    collapsed = [r["run_id"] for r in records if collapse_reason(r.get("per_class_accuracy") or [])]
    first, last, wall = _span(records)
    return [
        ("store", f"`{redact(store.uri)}`"),
        ("runs", f"{len(records)} ({', '.join(f'{n} {k}' for k, n in sorted(roles.items()))}); "
                 f"{len(collapsed)} collapsed"),
        ("trained on", _counted(f"{r.get('host', '?')}: {r.get('device', '?')}" for r in records)),
        ("code", _counted(r.get("code_version", "?") for r in records)),
        ("first run started", first),
        ("last run finished", last),
        ("wall time", f"{wall} (first start to last finish)"),
    ]


# ----------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------
def verdicts_of(comparison_md: str) -> str:
    """The ``### Verdicts`` section of ``paper_comparison.md`` (tally lines and table)."""
    match = re.search(r"^### Verdicts\n(.*?)(?=^#|\Z)", comparison_md, re.S | re.M)
    if match is None:
        raise ValueError(f"{COMPARISON} has no '### Verdicts' section: is it kdray's analysis?")
    return match.group(1).strip() + "\n"


def _demoted(markdown: str) -> str:
    """The file's headings one level down, to sit under the page's own."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.M)


def render(title: str, rows: list[tuple[str, str]], verdicts: str, tables_md: str,
           comparison_md: str, figures: list[str]) -> str:
    """The page as Markdown (figures: their paths relative to the page)."""
    lines = [f"# Results: {title}", "", GENERATED, "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Verdicts", "", f"<!-- verdicts: {title} -->", verdicts.rstrip(),
              "<!-- /verdicts -->", ""]
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    lines += [_demoted(tables_md).rstrip(), "", _demoted(comparison_md).rstrip(), ""]
    return "\n".join(lines)


def analysis_folder(options: PageOptions) -> tuple[Store, str]:
    """(the store holding the analysis, the folder's path in it)."""
    if options.analysis:
        where = Store(options.analysis)
        return where, where.root
    store = Store(options.store)
    return store, store.path("analysis")


def copy_figures(where: Store, folder: str, out: Path) -> list[str]:
    """Copy the analysis's fairness figures beside the page; their paths relative to it."""
    selector = pafs.FileSelector(f"{folder}/{FIGURES}", allow_not_found=True)
    names = sorted(i.base_name for i in where.fs.get_file_info(selector)
                   if any(k in i.base_name for k in FIGURE_KINDS))
    beside = out.with_suffix("")
    beside.mkdir(parents=True, exist_ok=True)
    for name in names:
        (beside / name).write_bytes(where.read_bytes(f"{folder}/{FIGURES}/{name}"))
    return [f"{beside.name}/{name}" for name in names]


def write_page(options: PageOptions) -> str:
    """Write the page (and its figures) and return its verdicts section."""
    where, folder = analysis_folder(options)
    tables_md = where.read_bytes(f"{folder}/{TABLES}").decode()
    comparison_md = where.read_bytes(f"{folder}/{COMPARISON}").decode()
    verdicts = verdicts_of(comparison_md)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = copy_figures(where, folder, out)
    store = Store(options.store)
    out.write_text(render(out.stem, header_rows(store, run_records(store)), verdicts,
                          tables_md, comparison_md, figures))
    return verdicts


# ----------------------------------------------------------------------------------------
# README's copy of a page's verdicts
# ----------------------------------------------------------------------------------------
def page_verdicts(page_md: str) -> str:
    """The verdicts between a page's own markers."""
    match = MARKER.search(page_md)
    if match is None:
        raise ValueError("the page has no '<!-- verdicts: ... -->' block: write it again")
    return match.group("body")


def embed(readme: str, page: str, verdicts: str) -> str:
    """``readme`` with the block marked for ``page`` holding ``verdicts``."""
    block = re.compile(rf"(<!-- verdicts: {re.escape(page)} -->\n).*?(<!-- /verdicts -->)", re.S)
    if not block.search(readme):
        raise ValueError(f"README has no '<!-- verdicts: {page} -->' ... '<!-- /verdicts -->' "
                         "block to fill")
    return block.sub(lambda m: m.group(1) + verdicts.rstrip() + "\n" + m.group(2), readme)


def readme_problems(readme_path: Path) -> list[str]:
    """Each README block whose verdicts differ from its page's (pages relative to README)."""
    problems = []
    for match in MARKER.finditer(readme_path.read_text()):
        page = readme_path.parent / match.group("page")
        if not page.exists():
            problems.append(f"{match.group('page')}: no such page")
        elif match.group("body") != page_verdicts(page.read_text()):
            problems.append(f"{match.group('page')}: README's verdicts differ from the page's")
    return problems


def update_readme(readme: Path, page: Path) -> None:
    """Put ``page``'s verdicts into README's block for it (named relative to README)."""
    name = page.resolve().relative_to(readme.resolve().parent).as_posix()
    readme.write_text(embed(readme.read_text(), name, page_verdicts(page.read_text())))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdray.analysis.results_page",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="./results", help="the study's store (default ./results)")
    p.add_argument("--out", required=True, help="the page to write, e.g. docs/results/<study>.md")
    p.add_argument("--analysis", default=None,
                   help="the analysis's folder, when the job wrote it elsewhere (--out of "
                        "python -m kdray.analysis); default {store}/analysis")
    p.add_argument("--readme", default=None,
                   help="a README whose '<!-- verdicts: PAGE -->' block gets the page's verdicts")
    args = p.parse_args(argv)
    try:
        write_page(PageOptions(args.out, args.store, args.analysis, args.readme))
        if args.readme:
            update_readme(Path(args.readme), Path(args.out))
    except (FileNotFoundError, ValueError) as e:
        print(f"results_page: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}" + (f" and its verdicts in {args.readme}" if args.readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
