"""The repository stands alone: no file refers to a file outside it (the documents the
project was built from, a sibling folder), and every path it names inside it exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("kdray", "sweeps", "benchmarks", "tests", "cluster", "docs", ".ci")
SKIP_DIRS = {"__pycache__", "venv", ".venv"}
MADE = (".ci/venv",)  # what the repository's own scripts create (.ci/run's virtual environment)
# documents and scripts that live beside the repository, never in it
OUTSIDE = re.compile("|".join([r"\.\./shared", r"(?<![\w.-])shared/", "API" + "_NOTES",
                               "gpu" + "_anchor", r"(?<![\w/.-])bench/"]))
DOCUMENT = re.compile(r"(?<![\w/.-])([A-Z][A-Z0-9_]+\.md)\b")  # README.md, ...
PATH = re.compile(r"(?<![\w/.~{-])((?:" + "|".join(re.escape(f) for f in FOLDERS)
                  + r")/[\w./-]*[\w-])(.?)")


def files() -> list[Path]:
    out = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if path.is_file() and not parts & SKIP_DIRS and not any(
                    p.endswith(".egg-info") for p in parts):
                out.append(path)
    return out


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # a binary file


def exists(reference: str, after: str) -> bool:
    """Does the path ``reference`` name something in the repository? A path cut short by a
    placeholder (``cluster/iam/kdray-$who-policy.json``, ``figures/*.png``) is a prefix."""
    if after and after in "${*<":
        parent = (ROOT / reference).parent
        return parent.is_dir() and any(p.name.startswith(Path(reference).name)
                                       for p in parent.iterdir())
    return (ROOT / reference).exists() or reference.startswith(MADE)


def test_no_file_refers_to_a_file_outside_the_repository():
    names = {p.name for p in files()}
    problems = []
    for path in files():
        text = text_of(path)
        if text is None or path == Path(__file__).resolve():
            continue
        where = path.relative_to(ROOT)
        for n, line in enumerate(text.splitlines(), 1):
            for m in OUTSIDE.finditer(line):
                problems.append(f"{where}:{n}: {m.group(0)!r} is outside the repository")
            for m in DOCUMENT.finditer(line):
                if m.group(1) not in names:
                    problems.append(f"{where}:{n}: {m.group(1)!r} is not in the repository")
            for m in PATH.finditer(line):
                if not exists(m.group(1), m.group(2)):
                    problems.append(f"{where}:{n}: {m.group(1)!r} does not exist")
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_it_should(tmp_path, monkeypatch):
    assert OUTSIDE.search("see ../shared/notes") and OUTSIDE.search("bench/x.py")
    assert not OUTSIDE.search("the shared work") and not OUTSIDE.search("benchmarks/cohort.py")
    assert DOCUMENT.search("as DESIGN.md says").group(1) == "DESIGN.md"
    assert [m.group(1) for m in PATH.finditer("kdray/sweep/cli.py and docs/nothing.md")] == \
        ["kdray/sweep/cli.py", "docs/nothing.md"]
    assert exists("kdray/sweep/cli.py", "") and not exists("docs/nothing.md", "")
    assert exists("cluster/iam/kdray-", "$") and not exists("cluster/iam/nobody-", "$")
