"""Functions a newcomer can read: none over 60 lines, none with more than 8 parameters (a
keyword-only options object counts as one), in kdray/ (the analysis included), sweeps/ and benchmarks/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("kdray", "sweeps", "benchmarks")
MAX_LINES, MAX_PARAMETERS = 60, 8


def functions(folder: str):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node


def parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Every parameter (``*args`` and ``**kwargs`` count one each), ``self``/``cls`` aside."""
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


@pytest.mark.parametrize("folder", FOLDERS)
def test_functions_are_short_and_take_few_parameters(folder):
    long = [f"{where}: {fn.end_lineno - fn.lineno + 1} lines" for where, fn in functions(folder)
            if fn.end_lineno - fn.lineno + 1 > MAX_LINES]
    wide = [f"{where}: {parameters(fn)} parameters" for where, fn in functions(folder)
            if parameters(fn) > MAX_PARAMETERS]
    assert not long + wide, "\n".join(long + wide)


def test_the_counts():
    fn = ast.parse("def f(self, a, /, b, *c, d, e=1, **f):\n    pass\n").body[0]
    assert parameters(fn) == 6 and fn.end_lineno - fn.lineno + 1 == 2
