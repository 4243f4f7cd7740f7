"""``distillery demo``'s table: the agreement column shows only when the results measured it, so
results written before it (bench/results/demo.json) still draw the same table in the docs."""

from __future__ import annotations

import pytest

from cli.demo import DemoResult, Phase, Score, share_equal


def _phase(**agreement: float) -> Phase:
    return Phase("tweets", 0.877, 0.705, 0.815, 2, 3, 300, 19, "v3 promoted", 86.0, **agreement)


def test_the_agreement_column_shows_only_when_measured() -> None:
    old = DemoResult([_phase()]).table().splitlines()
    assert "agreement" not in old[0]
    assert old[2] == "| tweets | 0.877 | 0.705 | 0.815 | v2 → v3 | 300 | 19 | v3 promoted | 86 s |"
    new = DemoResult([_phase(agreement_before=0.728, agreement_after=0.787)]).table().splitlines()
    assert new[0].endswith("| agreement with teacher |")
    assert new[2].endswith("| 86 s | 0.728 → 0.787 |")
    assert new[1].count("---") == old[1].count("---") + 1


def test_share_equal_counts_matching_labels() -> None:
    assert share_equal(["pos", "neg", "pos", "neg"], ["pos", "pos", "pos", "neg"]) == 0.75


def test_the_loops_gain_is_the_end_less_the_start_over_every_domain() -> None:
    start = [Score("movies", 1, 0.60, 0.62), Score("tweets", 1, 0.70, 0.66)]
    end = [Score("movies", 3, 0.70, 0.72), Score("tweets", 3, 0.68, 0.70)]
    result = DemoResult([_phase()], start=start, end=end)
    accuracy, agreement = result.gain()
    assert accuracy == pytest.approx(0.04) and agreement == pytest.approx(0.07)
    lines = result.table().splitlines()
    assert "| tweets | v1: 0.700, 0.660 | v3: 0.680, 0.700 |" in lines
    assert DemoResult.from_dict(result.to_dict()) == result
    # results written before the start and end were measured read back with neither
    old = {"phases": result.to_dict()["phases"]}
    assert DemoResult.from_dict(old).table() == DemoResult([_phase()]).table()
