"""The README and docs/ against what they describe, so the front door cannot rot.

The README is short (a front door, not a manual) and links every page under docs/; the pages'
benchmark tables are generated from ``bench/results`` by ``bench.docs_tables``, so a benchmark
rerun that changes a result fails here until the pages are regenerated; every relative link
points to a file that exists; and each headline figure in the README is a number that its linked
page's (generated) tables hold.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import docs_tables
from bench.harness import RESULTS
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
OWN_GENERATOR = {"teachers"}  # bench.teachers writes its table into docs/teachers.md itself


def _blocks() -> list[tuple[Path, str]]:
    return [(page, name) for page in PAGES for name in docs_tables.names(page.read_text())]


def _links(text: str) -> list[str]:
    """Relative link targets (no URLs, no in-page anchors)."""
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


def _target(path: Path, link: str) -> Path:
    return (path.parent / link.split("#", 1)[0]).resolve()


@pytest.mark.parametrize(("page", "name"), _blocks(), ids=lambda v: getattr(v, "name", v))
def test_each_results_block_is_what_its_results_render(page: Path, name: str) -> None:
    block = page.read_text().split(f"<!-- results:{name}:start -->\n", 1)[1]
    block = block.split(f"<!-- results:{name}:end -->", 1)[0]
    assert block == docs_tables.render(name), f"{page.name}: run `python -m bench.docs_tables`"


def test_the_check_finds_no_stale_block_and_names_one() -> None:
    assert docs_tables.stale(PAGES) == []
    assert docs_tables.main(["--check"]) == 0
    changed = docs_tables.rewrite("<!-- results:swap:start -->\nold\n<!-- results:swap:end -->")
    assert "old" not in changed and docs_tables.render("swap") in changed


def test_every_results_table_is_shown_on_a_page() -> None:
    shown = {name for _, name in _blocks()}
    tables = {path.stem for path in RESULTS.glob("*.md")} - OWN_GENERATOR
    assert sorted(tables - shown) == [], "results with no block in docs/"
    assert "demo" in shown


def test_the_readme_is_a_short_front_door() -> None:
    size = len(README.read_bytes())
    assert size <= 15_500, f"README.md is {size} bytes: move sections into docs/"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(path: Path) -> None:
    missing = [link for link in _links(path.read_text()) if not _target(path, link).exists()]
    assert missing == [], f"{path.name}: broken links"


def test_the_readme_links_every_docs_page() -> None:
    linked = {_target(README, link) for link in _links(README.read_text())}
    assert sorted(p.name for p in PAGES if p.resolve() not in linked) == []


def test_the_readme_figures_are_generated_from_the_results() -> None:
    """The README's figures are one generated table (``bench.headline``), never hand copies."""
    section = README.read_text().split("\n## Figures\n", 1)[1].split("\n## ", 1)[0]
    assert docs_tables.names(section) == ["headline"]
    block = section.split("<!-- results:headline:start -->\n", 1)[1].split("<!--", 1)[0]
    assert block == docs_tables.render("headline") and block.count("\n|") >= 4
    assert "serving" in block and "`" in block  # each row names its commit
