"""How every kdray command's ``--help`` reads: a one-line usage, its description and epilog as
written (usage examples keep their lines), one flag a line where it fits, a flag's other
spellings and its default after its help (unless the help says the default already)."""

from __future__ import annotations

import argparse

EPILOG = "Every flag and KDRAY_* variable of every command: docs/cli.md."


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``RawDescriptionHelpFormatter`` with the flag column at 34, a flag shown under its
    first spelling with the others (``--seed`` of ``--seeds``) named after its help, and
    ``(default: X)`` added when it has a default worth saying and its help names none."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not aliases(action):
            return super()._format_action_invocation(action)
        default = self._get_default_metavar_for_optional(action)
        return f"{action.option_strings[0]} {self._format_args(action, default)}"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if aliases(action):
            text += f" (also {', '.join(aliases(action))})"
        if shows_default(action) and "default" not in text:
            text += f" (default: {default_text(action.default)})".replace("%", "%%")
        return text


def aliases(action: argparse.Action) -> list[str]:
    """A long flag's other long spellings (``--seed`` for ``--seeds``); none for ``-h``."""
    names = action.option_strings
    if action.nargs == 0 or len(names) < 2 or not all(n.startswith("--") for n in names):
        return []  # -h/--help, --progress/--no-progress: argparse shows them well
    return names[1:]


def shows_default(action: argparse.Action) -> bool:
    """Whether a flag's default says something: a flag that takes a value, and a default
    that is not None, empty or suppressed."""
    return (bool(action.option_strings) and action.nargs != 0
            and action.default not in (None, [], ()) and action.default is not argparse.SUPPRESS)


def default_text(value) -> str:
    """A default as it would be typed: ``0 1 2`` for a list."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def command_parser(prog: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """A parser named ``prog`` (``python -m kdray.trial``: the same in ``--help`` wherever
    it runs from) with a one-line usage, that formats its help with :class:`HelpFormatter`
    and ends it with a pointer to docs/cli.md."""
    kwargs.setdefault("epilog", EPILOG)
    kwargs.setdefault("usage", "%(prog)s [options]")
    return argparse.ArgumentParser(prog=prog, description=description.strip("\n"),
                                   formatter_class=HelpFormatter, **kwargs)


def explain(action: argparse.Action, details: str) -> argparse.Action:
    """Give a flag more than its one line of ``--help``: docs/cli.md prints ``details`` after
    its help."""
    action.details = details
    return action


def one_value(p: argparse.ArgumentParser, flag: str, values: list):
    """The one value of a plural flag that takes one (``--seeds 0``); a usage error (exit
    status 2) for more."""
    if len(values) != 1:
        p.error(f"{flag}: {' '.join(map(str, values))}: one value, not {len(values)}")
    return values[0]


def description_of(doc: str) -> str:
    """A script docstring's first paragraph, with its usage examples when an indented block
    follows within the next two paragraphs: the description ``--help`` prints."""
    paragraphs = doc.strip("\n").split("\n\n")
    examples = [i for i, text in enumerate(paragraphs[:3]) if text.startswith("    ")]
    return "\n\n".join(paragraphs[:examples[0] + 1] if examples else paragraphs[:1])
