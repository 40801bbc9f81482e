"""A study's results page is written from its store's analysis, and README's copy of a page's
verdicts cannot drift from the page: ``python -m kdray.analysis.results_page``."""

from __future__ import annotations

import pathlib

import pytest

from analysis_store import write_fairness_study
from kdray import analysis
from kdray.analysis import results_page
from kdray.analysis.results_page import (embed, main, page_verdicts, readme_problems,
                                         verdicts_of)
from kdray.store import Store

ROOT = pathlib.Path(__file__).resolve().parents[1]
GAP = {"teacher": 0.04, "nds": 0.20, 2.0: 0.10, 6.0: 0.08, 10.0: 0.06}
RECORD = {"host": "node-a", "device": "cpu (Test CPU, AVX2, 1 threads)",
          "code_version": "0.1.0+abcdef012345", "started": "2026-12-07T10:00:00+00:00",
          "finished": "2026-12-07T10:02:05+00:00"}


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_local):
    """A tiny planted study (3 seeds, T = 2, 6, 10) through the whole analysis, its runs
    saying where and when they ran."""
    root = tmp_path_factory.mktemp("page") / "store"
    write_fairness_study(str(root), "celeba-smiling", GAP, per_cell=50)
    store = Store(str(root))
    for run_id in store.list_run_ids():
        store.write_run_json(run_id, {**store.read_run_json(run_id), **RECORD})
    analysis.run(str(root), wandb_mode="disabled")
    return root


def test_page_has_the_header_the_verdicts_the_tables_and_the_figures(study, tmp_path):
    out = tmp_path / "site" / "tiny.md"
    assert main(["--store", str(study), "--out", str(out)]) == 0
    page = out.read_text()
    assert "| runs | 15 (9 ds, 3 nds, 3 teacher); 0 collapsed |" in page
    assert "| trained on | node-a: cpu (Test CPU, AVX2, 1 threads) (15 runs) |" in page
    assert "| code | 0.1.0+abcdef012345 (15 runs) |" in page
    assert "| wall time | 2m05s (first start to last finish) |" in page
    comparison = (study / "analysis" / "paper_comparison.md").read_text()
    assert page_verdicts(page) == verdicts_of(comparison)  # the job's verdicts, as written
    assert "| C3 | celeba-smiling resnet50/resnet18 alpha=0.8 | young | eod |" in page
    assert (study / "analysis" / "tables.md").read_text().splitlines()[4] in page
    figures = sorted(p.name for p in (tmp_path / "site" / "tiny").iterdir())
    assert figures and all("_fairness_" in f for f in figures)
    for f in figures:
        assert f"](tiny/{f})" in page


def test_readme_gets_the_pages_verdicts_and_a_changed_copy_is_caught(study, tmp_path):
    out = tmp_path / "site" / "tiny.md"
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- verdicts: site/tiny.md -->\nold\n<!-- /verdicts -->\nend\n")
    assert main(["--store", str(study), "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert page_verdicts(text) == page_verdicts(out.read_text()) and text.endswith("end\n")
    assert readme_problems(readme) == []
    readme.write_text(text.replace("reproduced", "REPRODUCED", 1))
    assert readme_problems(readme) == ["site/tiny.md: README's verdicts differ from "
                                       "the page's"]


def test_a_store_without_an_analysis_exits_2_in_one_line(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "empty"), "--out", str(tmp_path / "p.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("results_page: ") and err.count("\n") == 1
    with pytest.raises(ValueError, match="no '<!-- verdicts: pages/x.md -->'"):
        embed("no block here", "pages/x.md", "v")
    with pytest.raises(ValueError, match="no '### Verdicts' section"):
        verdicts_of("# not kdray's\n")


def test_readmes_verdicts_are_its_pages():
    """README's verdict tables are the generated pages', character for character."""
    readme = ROOT / "README.md"
    assert results_page.MARKER.search(readme.read_text()), "README shows no generated verdicts"
    assert readme_problems(readme) == []
