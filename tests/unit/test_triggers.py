"""When to retrain: label count first, then the clock, but never on a clock with too little data."""

from __future__ import annotations

import pytest

from distillery.settings import SchedulerSettings
from monitoring.triggers import should_retrain

SETTINGS = SchedulerSettings(
    interval_minutes=30, min_new_labels=200, min_labels_for_time_trigger=20
)


def test_enough_new_labels_fire_at_once() -> None:
    trigger = should_retrain(200, 0.0, SETTINGS)
    assert trigger.fire
    assert trigger.reason == "200 new labels ≥ 200"


def test_one_label_short_does_not_fire_early() -> None:
    trigger = should_retrain(199, 29.9, SETTINGS)
    assert not trigger.fire
    assert trigger.reason == "199 new labels, 29.9 min since the last round"


def test_interval_fires_with_some_data() -> None:
    trigger = should_retrain(20, 30.0, SETTINGS)
    assert trigger.fire
    assert trigger.reason == "30.0 min since the last round with 20 new labels"


def test_interval_does_not_fire_with_too_little_data() -> None:
    trigger = should_retrain(19, 600.0, SETTINGS)
    assert not trigger.fire
    assert "19 new labels" in trigger.reason
    assert "600.0 min" in trigger.reason


def test_count_trigger_wins_over_the_clock() -> None:
    assert should_retrain(500, 45.0, SETTINGS).reason.startswith("500 new labels ≥ 200")


@pytest.mark.parametrize(
    ("labels", "minutes", "fire"),
    [(0, 0.0, False), (0, 1e6, False), (50, 10.0, False), (50, 31.0, True), (1_000, 0.0, True)],
)
def test_decision_table(labels: int, minutes: float, fire: bool) -> None:
    assert should_retrain(labels, minutes, SETTINGS).fire is fire


def test_thresholds_come_from_settings() -> None:
    eager = SchedulerSettings(interval_minutes=1, min_new_labels=5, min_labels_for_time_trigger=1)
    assert should_retrain(5, 0.0, eager).fire
    assert should_retrain(1, 1.0, eager).fire
    assert not should_retrain(1, 0.5, eager).fire
