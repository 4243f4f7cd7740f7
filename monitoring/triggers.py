"""When to retrain: a pure decision from counts and clocks."""

from __future__ import annotations

from dataclasses import dataclass

from distillery.settings import SchedulerSettings


@dataclass(frozen=True)
class Trigger:
    fire: bool
    reason: str


def should_retrain(
    new_labels: int, minutes_since_round: float, settings: SchedulerSettings
) -> Trigger:
    """After ``min_new_labels`` new labels, or every ``interval_minutes`` if there is some data."""
    if new_labels >= settings.min_new_labels:
        return Trigger(True, f"{new_labels} new labels ≥ {settings.min_new_labels}")
    if (
        minutes_since_round >= settings.interval_minutes
        and new_labels >= settings.min_labels_for_time_trigger
    ):
        return Trigger(
            True, f"{minutes_since_round:.1f} min since the last round with {new_labels} new labels"
        )
    return Trigger(
        False, f"{new_labels} new labels, {minutes_since_round:.1f} min since the last round"
    )
