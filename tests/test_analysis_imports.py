"""The analysis is a one-way pipeline: no import cycle (analysis and kdray), renderers that see
only the table model, store file names only from kdray.store, study fields from RunSpec."""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import pathlib
import sys

import pytest

from analysis.groups import MODEL_FIELDS, STUDY_FIELDS, study_key
from analysis_store import make_spec
from kdray.spec import RunSpec

ROOT = pathlib.Path(__file__).resolve().parents[1]
RENDERERS = ["analysis.markdown", "analysis.figures", "analysis.outputs", "analysis.wandb_run",
             "analysis.cache"]


def _modules(package: str) -> dict[str, pathlib.Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (top level, in functions, under
    TYPE_CHECKING): every ``import`` statement counts."""
    mods = _modules(package)
    graph = {}
    for name, path in mods.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    deps |= {full} if full in mods else ({base} if base in mods else set())
        graph[name] = deps - {name}
    return graph


def without_registrations(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph less the edges from a package's ``__init__`` to its own direct submodules:
    ``kdray.data`` and ``kdray.models`` import their submodules last, so that each registers
    its datasets/models in the registry the package defines (timm's pattern). Every other
    edge, lazy ones included, still counts."""
    return {m: {d for d in deps if d.rpartition(".")[0] != m} for m, deps in graph.items()}


@pytest.mark.parametrize("package", ["analysis", "kdray"])
def test_no_import_cycle(package):
    graph = import_graph(package)
    if package == "kdray":
        graph = without_registrations(graph)
    assert len(graph) > 5
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        # graphlib lists each node before the ones that depend on it; reversed: "imports"
        pytest.fail(f"import cycle in {package}: {' imports '.join(reversed(e.args[1]))}")


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")  # lazy, still a cycle
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(import_graph("cyc")).static_order())


def test_renderers_see_only_the_table_model():
    graph = import_graph("analysis")
    for renderer in RENDERERS:
        reach, todo = set(), [renderer]
        while todo:
            for dep in graph[todo.pop()] - reach:
                reach.add(dep)
                todo.append(dep)
        assert reach <= {"analysis", "analysis.model", "analysis.outputs"}, (renderer, reach)


def test_store_file_names_come_from_kdray_store():
    """No analysis module spells a store file's name; they use kdray.store's constants."""
    for name, path in _modules("analysis").items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ("predictions.parquet", "run.json",
                                          "model.safetensors"), name


def test_study_fields_are_runspec_fields_but_the_model_ones():
    names = [f.name for f in dataclasses.fields(RunSpec)]
    assert set(MODEL_FIELDS) <= set(names)
    assert list(STUDY_FIELDS) == [n for n in names if n not in MODEL_FIELDS]


@pytest.mark.parametrize("field", STUDY_FIELDS)
def test_every_study_field_separates_studies(field):
    spec = make_spec("toy", "nds", "small", 0)
    other = {**spec, field: ["changed", field]}
    assert study_key(spec) != study_key(other)
    for f in MODEL_FIELDS:  # the model's fields never do
        assert study_key(spec) == study_key({**spec, f: "other"})


# What the analysis may import of kdray: the store, RunSpec (its module and its field rules,
# run.json's check included), the store's own check that a URI is a usable store before any
# work (kdray.store_check: `python -m analysis --store` names a file, a missing bucket or
# missing credentials in one line, as the sweep does; it reaches S3 through kdray.s3, below
# it), the shared module that joins Ray and picks W&B's mode, and the collapse rule that the
# sweep's summary and the analysis share (kdray.collapse); never the sweep side.
ANALYSIS_MAY_IMPORT = {"kdray", "kdray.store", "kdray.spec", "kdray.checks", "kdray.connect",
                       "kdray.store_check", "kdray.collapse"}
SWEEP_SIDE = ("kdray.sweep", "kdray.trial", "kdray.training")


def kdray_imports(package: str) -> dict[str, set[str]]:
    """module of ``package`` -> the kdray modules it imports anywhere (lazy ones included)."""
    out = {}
    for name, path in _modules(package).items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "kdray"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kdray":
                kdray_mods = _modules("kdray")
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    found.add(full if full in kdray_mods else node.module)
        out[name] = found
    return out


def test_the_analysis_never_imports_the_sweep_side():
    imported = kdray_imports("analysis")
    for module, found in imported.items():
        assert found <= ANALYSIS_MAY_IMPORT, (module, found - ANALYSIS_MAY_IMPORT)
    # nor through what it may import
    graph = without_registrations(import_graph("kdray"))
    reach, todo = set(), [m for found in imported.values() for m in found]
    while todo:
        for dep in graph.get(todo.pop(), set()) - reach:
            reach.add(dep)
            todo.append(dep)
    assert not [m for m in reach if m.startswith(SWEEP_SIDE)], sorted(reach)


def test_the_sweep_check_finds_a_sweep_import(tmp_path, monkeypatch):
    pkg = tmp_path / "analysis"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from kdray.sweep.cluster import placement\n")
    (tmp_path / "kdray").mkdir()
    (tmp_path / "kdray" / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert kdray_imports("analysis")["analysis.a"] == {"kdray.sweep.cluster"}


# kdray's layers, lowest first; a module may import its own layer's and lower ones only (the
# contract's RunSpec reads the registries to resolve a recipe, so those two sit together)
LAYERS = [("kdray", "kdray.spec", "kdray.checks", "kdray.store", "kdray.s3",
           "kdray.store_check", "kdray.lease", "kdray.connect", "kdray.tracking", "kdray.data",
           "kdray.models"),
          ("kdray.training",), ("kdray.trial",), ("kdray.sweep",)]


def layer_of(module: str) -> int:
    return max(i for i, prefixes in enumerate(LAYERS)
               if any(module == p or module.startswith(p + ".") for p in prefixes))


def test_no_import_runs_back_up_a_layer():
    graph = without_registrations(import_graph("kdray"))
    up = [(m, d) for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m)]
    assert not up, up
