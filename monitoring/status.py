"""What the scheduler reports about the running loop, as typed models defined once.

The scheduler builds them (``Scheduler.status``, ``Scheduler.measure``); the Serve app's
operator routes send them as JSON (``GET /v1/status``), and ``distillery status`` reads that JSON
back into ``Status`` (``cli.status``). The operator page's payload is assembled from the same
model (``monitoring.dashboard``). No string-keyed dict crosses a package border on the way.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from distillery.contracts import (
    Rollout,
    RolloutVerdict,
    RoundProgress,
    RoundReport,
    Selection,
)
from feedback.trust_report import SourceTrust
from monitoring.triggers import Decision, Kind, Signals


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class DriftCheck(_View):
    """The newest drift check (``monitoring.watch.Watch``): per kind of column, the share that
    drifted and which columns did."""

    version: int | None
    checked_at: float  # Unix s
    share: dict[str, float]  # kind → drifted share of its columns
    drifted: dict[str, list[str]]  # kind → the drifted columns
    reference_rows: int
    current_rows: int
    method: str


class TriggerView(_View):
    """What the triggers last decided (``monitoring.triggers.decide``)."""

    fire: bool
    kind: Kind | None
    value: float | None
    reason: str
    cooldown_until: float | None
    disarmed: list[str]

    @classmethod
    def of(cls, decision: Decision) -> TriggerView:
        return cls(
            fire=decision.fire,
            kind=decision.kind,
            value=decision.value,
            reason=decision.reason,
            cooldown_until=decision.cooldown_until,
            disarmed=sorted(decision.state.disarmed),
        )


class TeacherView(_View):
    """The configured teacher, its live state, and whether the serving version learnt from it."""

    kind: str
    teacher_id: str | None
    state: str  # up | down | unknown (no labeler answered)
    last_error: str | None
    serving_version_learnt_from: dict[str, int]  # teacher_id → training rows
    changed: bool
    note: str | None
    old_labels: str


class TrustView(_View):
    """The last round's trust estimate: the teacher's reliability and the keys, ranked."""

    mode: str
    teacher: SourceTrust
    keys: list[SourceTrust]
    members: list[SourceTrust] = []  # an ensemble teacher's members, each with its share


class CascadeView(_View):
    """The deployment's default ``min_confidence`` and the threshold offered for the serving
    student at its gate (``training.selective``; None before any gate)."""

    min_confidence: float
    offered: Selection | None
    version: int | None


class Deferral(_View):
    """A round the triggers fired but the scheduler did not start: its holdout was too small
    for the gate (``training.gate.TooFewHeldOut``). It tries again once
    ``labels_since_last_round`` reaches ``retry_at_labels``, with no cooldown in between."""

    reason: str
    retry_at_labels: int


class Status(_View):
    """``distillery status`` and ``GET /v1/status``."""

    rollout: Rollout | None
    rollout_verdict: RolloutVerdict | None
    current_version: int | None
    versions: list[int]
    labels_since_last_round: int
    minutes_since_last_round: float
    round_running: bool
    round_progress: RoundProgress | None
    last_round: RoundReport | None
    last_error: str | None
    deferred: Deferral | None = None  # absent from an older server's JSON
    drift: DriftCheck | None
    signals: Signals | None
    trigger: TriggerView | None
    replicas: dict[str, int]  # replica → the version it serves
    teacher: TeacherView
    trust: TrustView | None
    cascade: CascadeView


class Measurement(_View):
    """One ``Scheduler.measure``: the signals, what the triggers decide on them, the drift."""

    signals: Signals
    trigger: TriggerView
    drift: DriftCheck | None
