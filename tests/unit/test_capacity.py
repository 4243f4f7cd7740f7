"""docs/scaling.md's capacity table is exactly what the benchmarks' committed results give."""

from __future__ import annotations

import pytest

from bench.capacity import END, PAGE, START, load, render, rewrite


def test_the_scaling_page_holds_the_table_the_results_render() -> None:
    page = PAGE.read_text()
    assert render(load()) in page, "run `make capacity` after a benchmark changes its results"
    table = page.split(START, 1)[1].split(END, 1)[0]
    for component in ("Serve replica", "teacher labeler", "Ray Train worker"):
        assert component in table


def test_rewrite_replaces_only_between_the_markers() -> None:
    page = f"intro\n{START}\nold\n{END}\noutro\n"
    assert rewrite(page, "new\n") == f"intro\n{START}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        rewrite("no markers", "x")
