"""When to retrain: a pure decision from signals, clocks and the previous decision's state.

Five triggers, checked in this order (the first that fires names the round):

1. ``feedback``: the share of recent ratings that are bad, once ``min_signal_ratings`` exist;
2. ``disagreement``: teacher vs the served student on recent sampled traffic, once
   ``min_signal_labels`` exist;
3. ``drift``: the largest share of drifted columns over the drift kinds;
4. ``volume``: ``min_new_labels`` teacher labels since the last round;
5. ``schedule``: ``interval_minutes`` since the last round.

Every trigger needs ``min_labels_for_time_trigger`` new labels (a round needs data), and none
fires within ``cooldown_minutes`` of the last round. The three signal triggers have hysteresis:
one that fired is disarmed until its value falls below ``rearm_ratio`` × its threshold, so a
signal that a round cannot bring down (a teacher that disagrees with itself, a domain the
student cannot learn) starts one round, not one per cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from distillery.settings import SchedulerSettings

Kind = Literal["feedback", "disagreement", "drift", "volume", "schedule"]
SIGNALS: tuple[Kind, ...] = ("feedback", "disagreement", "drift")


@dataclass(frozen=True)
class Signals:
    """What the scheduler measured; ``None`` where there is too little evidence."""

    new_labels: int
    minutes_since_round: float
    drift: float | None = None  # max share of drifted columns over kinds, 0..1
    disagreement: float | None = None  # 0..1
    labelled: int = 0  # teacher labels behind ``disagreement``
    negative_share: float | None = None  # 0..1
    rated: int = 0  # ratings behind ``negative_share``


@dataclass(frozen=True)
class TriggerState:
    """Carried from one decision to the next: when the last round started and which signal
    triggers are disarmed (hysteresis)."""

    last_round_at: float | None = None  # Unix s
    disarmed: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Decision:
    fire: bool
    kind: Kind | None
    value: float | None  # the firing signal's value (labels, minutes or a share)
    reason: str
    state: TriggerState  # the state for the next decision, as if this round starts now
    cooldown_until: float | None  # Unix s


def _signal_values(signals: Signals, settings: SchedulerSettings) -> dict[str, float | None]:
    """The signal triggers' values, None without enough evidence."""
    enough_labels = signals.labelled >= settings.min_signal_labels
    enough_ratings = signals.rated >= settings.min_signal_ratings
    return {
        "feedback": signals.negative_share if enough_ratings else None,
        "disagreement": signals.disagreement if enough_labels else None,
        "drift": signals.drift,
    }


def _thresholds(settings: SchedulerSettings) -> dict[str, float]:
    return {
        "feedback": settings.negative_feedback_threshold,
        "disagreement": settings.disagreement_threshold,
        "drift": settings.drift_threshold,
    }


def rearm(state: TriggerState, signals: Signals, settings: SchedulerSettings) -> TriggerState:
    """Re-arm each disarmed signal trigger whose value fell below ``rearm_ratio`` × threshold."""
    values, limits = _signal_values(signals, settings), _thresholds(settings)
    keep = {
        kind
        for kind in state.disarmed
        if values.get(kind) is None or values[kind] >= settings.rearm_ratio * limits[kind]  # type: ignore[operator]
    }
    return replace(state, disarmed=frozenset(keep))


def decide(
    signals: Signals, state: TriggerState, now: float, settings: SchedulerSettings
) -> Decision:
    """Whether a round starts now, which trigger and value, and the state to carry forward."""
    state = rearm(state, signals, settings)
    cooldown_until = (
        None
        if state.last_round_at is None
        else state.last_round_at + settings.cooldown_minutes * 60
    )
    firing = _firing(signals, state, settings)
    if firing is None:
        return Decision(False, None, None, _quiet(signals), state, cooldown_until)
    kind, value, reason = firing
    floor = settings.min_labels_for_time_trigger
    if signals.new_labels < floor:
        why = f"{reason}, but {signals.new_labels} new labels < {floor}"
        return Decision(False, None, None, why, state, cooldown_until)
    if cooldown_until is not None and now < cooldown_until:
        why = f"{reason}, but cooling down for {cooldown_until - now:.0f} s more"
        return Decision(False, None, None, why, state, cooldown_until)
    disarmed = state.disarmed | {kind} if kind in SIGNALS else state.disarmed
    after = TriggerState(last_round_at=now, disarmed=frozenset(disarmed))
    return Decision(True, kind, value, reason, after, now + settings.cooldown_minutes * 60)


def _firing(
    signals: Signals, state: TriggerState, settings: SchedulerSettings
) -> tuple[Kind, float, str] | None:
    """The first trigger over its threshold, in priority order, or None."""
    values, limits = _signal_values(signals, settings), _thresholds(settings)
    names = {"feedback": "negative feedback share", "disagreement": "teacher disagreement"}
    for kind in SIGNALS:
        value = values[kind]
        if value is not None and value >= limits[kind] and kind not in state.disarmed:
            name = names.get(kind, "drift share")
            return kind, value, f"{name} {value:.2f} ≥ {limits[kind]:.2f}"
    if signals.new_labels >= settings.min_new_labels:
        reason = f"{signals.new_labels} new labels ≥ {settings.min_new_labels}"
        return "volume", float(signals.new_labels), reason
    if signals.minutes_since_round >= settings.interval_minutes:
        minutes = signals.minutes_since_round
        return "schedule", minutes, f"{minutes:.1f} min since the last round"
    return None


def _quiet(signals: Signals) -> str:
    parts = [f"{signals.new_labels} new labels", f"{signals.minutes_since_round:.1f} min"]
    for name, value in (
        ("drift", signals.drift),
        ("disagreement", signals.disagreement),
        ("negative feedback", signals.negative_share),
    ):
        if value is not None:
            parts.append(f"{name} {value:.2f}")
    return "no trigger: " + ", ".join(parts)
