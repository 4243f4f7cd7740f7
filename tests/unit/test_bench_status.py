"""bench.status_cli's verdict and table: the goal holds under every measured load or not at all."""

from __future__ import annotations

from typing import Any

from bench.status_cli import met, table


def _load(p50: float, n: int = 10) -> dict[str, Any]:
    figures = {"p50_s": p50, "max_s": p50 * 2, "n": n}
    return {"command": figures, "api": {**figures, "p50_s": p50 / 10}}


def test_met_needs_every_measured_load_under_the_goal() -> None:
    assert met({"idle": _load(0.3), "traffic": _load(0.4), "round": _load(0.9)})
    assert not met({"idle": _load(0.3), "traffic": _load(0.4), "round": _load(1.2)})
    assert met({"idle": _load(0.3), "round": _load(float("nan"), n=0)})  # a round too short
    assert not met({"round": _load(float("nan"), n=0)})  # nothing measured


def test_table_names_each_load_and_the_verdict() -> None:
    loads = {"idle": _load(0.3), "round": _load(1.2)}
    result = {
        "loads": loads, "imports": {"p50_s": 0.31, "max_s": 0.4, "n": 10}, "rate": 10.0,
        "traffic_sent": 100, "traffic_failed": 2, "met": met(loads),
    }  # fmt: skip
    text = table(result)
    assert "| idle | 0.3 | 0.6 | 0.03 | 0.6 | 10 |" in text
    assert "| round | 1.2 |" in text and "| traffic |" not in text
    assert "100 sent, 2 failed" in text and "every load: not met" in text
