"""distillery.metrics.start_at_zero: the label sets it records at 0, through the method Ray's own
``Counter.inc`` ends in (checked here against Ray's source, so an upgrade that renames it fails
this test rather than every replica's start)."""

from __future__ import annotations

import inspect
from typing import Any

from ray.util.metrics import Counter

from distillery.metrics import start_at_zero


class Recorded:
    def __init__(self) -> None:
        self.points: list[tuple[float, dict[str, str]]] = []

    def _record(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.points.append((value, dict(tags or {})))


def test_each_label_set_is_recorded_at_zero() -> None:
    counter = Recorded()
    start_at_zero(counter, {"stage": "canary"}, {"stage": "shadow"})
    assert counter.points == [(0, {"stage": "canary"}), (0, {"stage": "shadow"})]


def test_a_counter_without_labels_gets_its_bare_series() -> None:
    counter = Recorded()
    start_at_zero(counter)
    assert counter.points == [(0, {})]


def test_rays_inc_refuses_zero_and_ends_in_record() -> None:
    source = inspect.getsource(Counter.inc)
    assert "self._record(value, tags=tags)" in source, source
    counter: Any = Counter.__new__(Counter)
    try:
        Counter.inc(counter, 0)
    except ValueError as exc:
        assert "must be >0" in str(exc)
    else:
        raise AssertionError("Ray's Counter.inc accepts 0 now: start_at_zero can use it")
