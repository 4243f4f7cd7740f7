"""When to retrain: five triggers in priority order, a data floor, cooldown and hysteresis."""

from __future__ import annotations

import pytest

from distillery.settings import SchedulerSettings
from monitoring.triggers import Decision, Signals, TriggerState, decide

SETTINGS = SchedulerSettings(
    interval_minutes=30,
    min_new_labels=200,
    min_labels_for_time_trigger=20,
    drift_threshold=0.5,
    disagreement_threshold=0.25,
    negative_feedback_threshold=0.3,
    min_signal_labels=50,
    min_signal_ratings=20,
    cooldown_minutes=5,
    rearm_ratio=0.8,
)
NOW = 1_000_000.0
FRESH = TriggerState()


def _decide(state: TriggerState = FRESH, now: float = NOW, **signals: float) -> Decision:
    base = {"new_labels": 100, "minutes_since_round": 1.0}
    return decide(Signals(**{**base, **signals}), state, now, SETTINGS)  # type: ignore[arg-type]


def test_quiet_signals_do_not_fire_and_say_what_was_seen() -> None:
    decision = _decide(drift=0.2, disagreement=0.1, labelled=80)
    assert not decision.fire and decision.kind is None
    assert decision.reason == "no trigger: 100 new labels, 1.0 min, drift 0.20, disagreement 0.10"


@pytest.mark.parametrize(
    ("signals", "kind", "value"),
    [
        ({"new_labels": 200}, "volume", 200.0),
        ({"minutes_since_round": 30.0}, "schedule", 30.0),
        ({"drift": 0.5}, "drift", 0.5),
        ({"disagreement": 0.3, "labelled": 50}, "disagreement", 0.3),
        ({"negative_share": 0.4, "rated": 20}, "feedback", 0.4),
    ],
)
def test_each_trigger_fires_at_its_threshold(signals: dict, kind: str, value: float) -> None:
    decision = _decide(**signals)
    assert decision.fire and decision.kind == kind
    assert decision.value == pytest.approx(value)


def test_signals_need_their_evidence() -> None:
    assert not _decide(disagreement=0.9, labelled=49).fire
    assert not _decide(negative_share=0.9, rated=19).fire


def test_priority_feedback_then_disagreement_then_drift_then_volume() -> None:
    everything = {
        "new_labels": 500, "minutes_since_round": 60.0, "drift": 1.0,
        "disagreement": 0.9, "labelled": 100, "negative_share": 0.9, "rated": 30,
    }  # fmt: skip
    assert _decide(**everything).kind == "feedback"
    assert _decide(**{**everything, "rated": 0}).kind == "disagreement"
    assert _decide(**{**everything, "rated": 0, "labelled": 0}).kind == "drift"
    assert _decide(**{**everything, "rated": 0, "labelled": 0, "drift": 0.0}).kind == "volume"


def test_no_trigger_fires_without_data_to_train_on() -> None:
    decision = _decide(new_labels=19, drift=1.0, minutes_since_round=600.0)
    assert not decision.fire
    assert decision.reason == "drift share 1.00 ≥ 0.50, but 19 new labels < 20"


def test_cooldown_holds_every_trigger_then_lets_it_fire() -> None:
    first = _decide(new_labels=300)
    assert first.fire and first.cooldown_until == NOW + 300
    held = _decide(first.state, NOW + 299, new_labels=300)
    assert not held.fire and "cooling down for 1 s more" in held.reason
    assert _decide(first.state, NOW + 300, new_labels=300).fire


def test_hysteresis_disarms_a_fired_signal_until_it_falls_below_the_rearm_mark() -> None:
    fired = _decide(drift=0.6)
    assert fired.fire and fired.state.disarmed == {"drift"}
    later = NOW + 3_600  # long after the cooldown
    still_high = _decide(fired.state, later, drift=0.6)
    assert not still_high.fire  # the round could not bring it down: no thrashing
    just_under = _decide(still_high.state, later, drift=0.45)  # above 0.8 × 0.5 = 0.40
    assert just_under.state.disarmed == {"drift"}
    rearmed = _decide(just_under.state, later, drift=0.39)
    assert rearmed.state.disarmed == frozenset() and not rearmed.fire
    assert _decide(rearmed.state, later, drift=0.55).kind == "drift"


def test_a_disarmed_signal_does_not_block_the_others() -> None:
    state = TriggerState(last_round_at=NOW - 3_600, disarmed=frozenset({"drift"}))
    decision = _decide(state, drift=0.9, disagreement=0.5, labelled=60)
    assert decision.kind == "disagreement"
    assert decision.state.disarmed == {"drift", "disagreement"}
    assert decision.state.last_round_at == NOW


def test_volume_and_schedule_have_no_hysteresis() -> None:
    first = _decide(new_labels=250)
    assert first.state.disarmed == frozenset()
    assert _decide(first.state, NOW + 301, new_labels=250).fire


def test_thresholds_come_from_settings() -> None:
    eager = SchedulerSettings(
        drift_threshold=0.1, cooldown_minutes=0, min_labels_for_time_trigger=1
    )
    decision = decide(Signals(new_labels=1, minutes_since_round=0.0, drift=0.1), FRESH, NOW, eager)
    assert decision.fire and decision.kind == "drift"
