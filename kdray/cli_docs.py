"""docs/cli.md, written from the commands' own parsers and ``kdray.environment``.

    python -m kdray.cli_docs --write      # rewrite docs/cli.md
    python -m kdray.cli_docs              # print it

Every command (the sweep scripts, ``python -m kdray.trial``, ``kdray.analysis``,
``kdray.sweep.preflight``, ``kdray.sweep.node_kind`` and each benchmark) with its description
and every flag (its spellings, default and help), then every ``KDRAY_*`` variable. The
scripts are loaded without running them (their ``main`` runs only as ``__main__``); nothing
starts Ray.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from kdray.cli_help import default_text, shows_default
from kdray.environment import VARIABLES

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "cli.md"
SWEEPS = ("quick", "trifeature_paper", "full_paper", "high_temps")


def commands() -> list[tuple[str, Callable[[], argparse.ArgumentParser]]]:
    """(the command as typed, its parser's factory), in the order docs/cli.md lists them."""
    from kdray.analysis.__main__ import parser as analysis
    from kdray.sweep.node_kind import parser as node_kind
    from kdray.sweep.preflight import parser as preflight
    from kdray.trial.cli import parser as trial

    found = [(f"python sweeps/{name}.py", _script(f"sweeps/{name}.py", "SCRIPT").parser)
             for name in SWEEPS]
    found += [("python -m kdray.trial", trial), ("python -m kdray.analysis", analysis),
              ("python -m kdray.sweep.preflight", preflight),
              ("python -m kdray.sweep.node_kind", node_kind)]
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        name = f"benchmarks/{path.name}"
        found.append((f"python {name}", _script(name, "parser")))
    return found


def _script(name: str, attribute: str):
    """``attribute`` of the script at ``name``, loaded as a module (not run as ``__main__``);
    the environment variables it sets while loading are undone."""
    with _environment_kept():
        return runpy.run_path(str(ROOT / name), run_name="kdray_cli_docs")[attribute]


@contextmanager
def _environment_kept() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def markdown() -> str:
    """docs/cli.md."""
    parts = [HEADER]
    tables: dict[str, str] = {}
    for command, factory in commands():
        p = factory()
        table = flags_table(p)
        same = next((c for c, t in tables.items() if t == table), None)
        parts.append(f"## `{command}`\n\n```text\n{p.description or ''}\n```\n\n"
                     + (f"Flags: as `{same}`.\n" if same else table))
        tables.setdefault(command, table)
    parts.append(variables_table())
    return "\n".join(parts)


HEADER = """\
# Command lines

Written by `python -m kdray.cli_docs --write` from the commands' parsers and
`kdray/environment.py`; a test fails when this file is not what it writes. Every command
takes `--help`. Conventions: a flag that takes several values is plural and takes them
space-separated (`--seeds 0 1 2`; the singular spelling still works where there was one); the
store is `./results` unless `--store` says otherwise; bad input exits with status 2 and a
one-line message.
"""


def flags_table(p: argparse.ArgumentParser) -> str:
    """A Markdown table of the parser's flags (``--help`` aside): spelling and metavar, other
    spellings, default, help."""
    rows = ["| flag | also | default | what it does |", "|---|---|---|---|"]
    formatter = argparse.HelpFormatter(p.prog)  # a flag's own help, nothing appended
    for action in p._actions:
        if (not action.option_strings or action.help == argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction)):
            continue
        first, *others = action.option_strings
        metavar = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
        flag = f"{first} {metavar}".strip() if action.nargs != 0 else first
        default = f"`{default_text(action.default)}`" if shows_default(action) else ""
        text = formatter._expand_help(action) if action.help else ""
        text = f"{text}. {action.details}" if getattr(action, "details", None) else text
        rows.append("| " + " | ".join(_cell(v) for v in (flag, ", ".join(others), default, text))
                    + " |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return f"`{text}`" if text.startswith("-") else text


def variables_table() -> str:
    rows = ["## Environment variables\n",
            "| variable | default | what it does |", "|---|---|---|"]
    for internal in (False, True):
        if internal:
            rows += ["", "Set by kdray's own cluster files and tests, listed for completeness:\n",
                     "| variable | default | what it does |", "|---|---|---|"]
        rows += [f"| `{name}` | `{v.default}` | {_cell(v.does)} |"
                 for name, v in sorted(VARIABLES.items()) if v.internal == internal]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdray.cli_docs", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    args = p.parse_args(argv)
    text = markdown()
    if args.write:
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
