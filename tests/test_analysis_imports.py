"""kdray's imports only point down: no import cycle, each module in a layer that imports only
its own and lower ones, and the analysis (``kdray.analysis``) a one-way pipeline whose
renderers see only the table model, with store file names only from kdray.store and study
fields from RunSpec."""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import pathlib
import sys

import pytest

from kdray.analysis.groups import MODEL_FIELDS, STUDY_FIELDS, study_key
from analysis_store import make_spec
from kdray.spec import RunSpec

ROOT = pathlib.Path(__file__).resolve().parents[1]
RENDERERS = ["kdray.analysis.markdown", "kdray.analysis.figures", "kdray.analysis.outputs", "kdray.analysis.wandb_run",
             "kdray.analysis.cache"]


def _modules(package: str) -> dict[str, pathlib.Path]:
    out = {}
    for path in (ROOT / package.replace(".", "/")).rglob("*.py"):
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
    """The graph less the registration edges: ``kdray.data`` and ``kdray.models`` import their
    dataset and model modules last, and each of those imports the package back to register
    itself in the registry the package defines (timm's pattern). Only such a pair is dropped,
    the package's edge to a submodule that imports the package; every other edge, lazy ones
    and a package's edge to any other submodule included, still counts."""
    def registers(package: str, sub: str) -> bool:
        return sub.rpartition(".")[0] == package and package in graph.get(sub, set())

    return {m: {d for d in deps if not registers(m, d)} for m, deps in graph.items()}


@pytest.mark.parametrize("package", ["kdray.analysis", "kdray"])
def test_no_import_cycle(package):
    graph = without_registrations(import_graph(package))
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


def test_a_package_importing_a_module_that_imports_it_back_is_a_cycle(tmp_path, monkeypatch):
    """The cycle kdray once had (store -> checks -> data -> data.fetch -> store) is found: a
    package's edge to a submodule counts unless that submodule registers into the package."""
    pkg = tmp_path / "cyc"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store.py").write_text("from cyc import data\n")
    (pkg / "data" / "__init__.py").write_text("from cyc.data import fetch, digits\n")
    (pkg / "data" / "fetch.py").write_text("def f():\n    from cyc.store import Store\n")
    (pkg / "data" / "digits.py").write_text("from cyc.data import register\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = without_registrations(import_graph("cyc"))
    assert graph["cyc.data"] == {"cyc.data.fetch"}  # digits registers; fetch does not
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_renderers_see_only_the_table_model():
    graph = import_graph("kdray.analysis")
    for renderer in RENDERERS:
        reach, todo = set(), [renderer]
        while todo:
            for dep in graph[todo.pop()] - reach:
                reach.add(dep)
                todo.append(dep)
        assert reach <= {"kdray.analysis", "kdray.analysis.model", "kdray.analysis.outputs"}, (renderer, reach)


def test_store_file_names_come_from_kdray_store():
    """No analysis module spells a store file's name; they use kdray.store's constants."""
    for name, path in _modules("kdray.analysis").items():
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
# work (kdray.store_check: `python -m kdray.analysis --store` names a file, a missing bucket or
# missing credentials in one line, as the sweep does; it reaches S3 through kdray.s3, below
# it), the shared module that joins Ray and picks W&B's mode, the collapse rule that the
# sweep's summary and the analysis share (kdray.collapse) and the help format every command
# shares (kdray.cli_help); never the sweep side.
ANALYSIS_MAY_IMPORT = {"kdray", "kdray.store", "kdray.spec", "kdray.checks", "kdray.connect",
                       "kdray.store_check", "kdray.collapse", "kdray.cli_help"}
SWEEP_SIDE = ("kdray.sweep", "kdray.trial", "kdray.training")


def _outside(module: str, package: str) -> bool:
    """A kdray module that is not ``package`` or one of its own."""
    return module.split(".")[0] == "kdray" and not (module == package
                                                    or module.startswith(package + "."))


def kdray_imports(package: str) -> dict[str, set[str]]:
    """module of ``package`` -> the kdray modules outside it that it imports anywhere (lazy
    ones included)."""
    out = {}
    for name, path in _modules(package).items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if _outside(a.name, package)}
            elif isinstance(node, ast.ImportFrom) and _outside(node.module or "", package):
                kdray_mods = _modules("kdray")
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    found.add(full if full in kdray_mods else node.module)
        out[name] = found
    return out


def test_the_analysis_never_imports_the_sweep_side():
    imported = kdray_imports("kdray.analysis")
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
    pkg = tmp_path / "kdray" / "analysis"
    pkg.mkdir(parents=True)
    (tmp_path / "kdray" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from kdray.sweep.cluster import placement\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert kdray_imports("kdray.analysis")["kdray.analysis.a"] == {"kdray.sweep.cluster"}


# kdray's layers, lowest first; a module may import its own layer's and lower ones only. A
# module's layer is that of its longest prefix here (kdray.data.fetch is kdray.data's).
LAYERS = [("kdray.s3", "kdray.connect", "kdray.collapse", "kdray.vocabulary",  # leaves
           "kdray.environment", "kdray.cli_help"),
          ("kdray.data", "kdray.models"),  # the registries
          ("kdray.checks",),  # what a valid value is (names looked up in the registries)
          ("kdray", "kdray.spec", "kdray.store"),  # the contract: RunSpec and the store
          ("kdray.lease", "kdray.store_check", "kdray.tracking"),  # built on the store/spec
          ("kdray.training",), ("kdray.trial",),
          ("kdray.analysis",),  # below the sweep, which runs it when its runs are done
          ("kdray.sweep",),
          ("kdray.cli_docs",)]  # docs/cli.md from every command's parser


def layer_of(module: str) -> int:
    matches = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
               if module == p or module.startswith(p + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def test_every_module_has_its_own_layer():
    """No module falls into a layer only through the package's name (``kdray``)."""
    for module in import_graph("kdray"):
        if module != "kdray":
            assert layer_of(module) != 3 or module in ("kdray.spec", "kdray.store"), module


def test_no_import_runs_back_up_a_layer():
    graph = without_registrations(import_graph("kdray"))
    up = [(m, d) for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m)]
    assert not up, up
