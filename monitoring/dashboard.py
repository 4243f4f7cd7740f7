"""The operator page's data (``GET /v1/dashboard``), assembled from what the scheduler knows.

Pure assembly: the scheduler's status, the watch's series, per-version quality and reports,
and the registry's versions and history. Every part is a model defined here once: the scheduler
sends ``Dashboard`` as JSON (``Scheduler.dashboard_json``), the Serve app passes the bytes on,
and the page (``services/dashboard.html``) draws them.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from pydantic import BaseModel, ConfigDict

from distillery.contracts import GateReport, Rollout, RolloutVerdict, RoundProgress
from distillery.task import Task
from monitoring.quality import VersionQuality
from monitoring.reports import ReportEntry
from monitoring.status import DriftCheck, Status, TeacherView, TriggerView, TrustView
from training.registry import HistoryEvent, Registry, VersionMeta

ROUNDS = 20
EVENTS = 30
OUTCOMES = {"promoted": "promoted", "retired": "promoted", "candidate": "candidate"}


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True)


class SeriesPoint(_Part):
    """One measurement of the watch (``state/monitor/series.json``, newest last)."""

    ts: float  # Unix s
    disagreement: float | None = None  # served version vs the teacher, 0..1
    drift: dict[str, float] | None = None  # kind → drifted share of its columns
    labels_per_min: float = 0.0
    rated: int = 0
    feedback_per_min: float = 0.0
    mean_rating: float | None = None  # 1..5
    negative_share: float | None = None  # 0..1


class WatchView(_Part):
    """What the watch holds for the page: its series, quality per version, reports, drift."""

    series: list[SeriesPoint]
    versions: list[VersionQuality]
    reports: list[ReportEntry]
    drift: DriftCheck | None


class VersionRow(_Part):
    """A registered version with its quality over the last signal window (None: unmeasured)."""

    version: int
    status: str
    created: float
    labelled: int | None = None
    disagreement: float | None = None
    rated: int | None = None
    mean_rating: float | None = None
    negative_share: float | None = None


class RoundRow(_Part):
    """One registered version as a round: what triggered it, its gate and how it ended."""

    version: int
    created: float
    trigger: str | None
    trigger_value: float | None
    reason: str
    outcome: str
    gate: GateReport | None
    online: dict[str, str]  # stage → the verdict's reason


class TriggerValues(_Part):
    labels: int
    minutes: float
    drift: float | None
    disagreement: float | None
    negative_share: float | None


class TriggerRow(TriggerView):
    """What the triggers last decided, with the values they decided on."""

    values: TriggerValues


class Dashboard(_Part):
    """The ``/v1/dashboard`` payload."""

    generated_at: float
    task: str
    labels: list[str]
    current_version: int | None
    rollout: Rollout | None
    rollout_verdict: RolloutVerdict | None
    round_running: bool
    round_progress: RoundProgress | None
    last_error: str | None
    teacher: TeacherView
    trust: TrustView | None
    series: list[SeriesPoint]
    versions: list[VersionRow]
    rounds: list[RoundRow]
    trigger: TriggerRow | None
    drift: DriftCheck | None
    reports: list[ReportEntry]
    events: list[HistoryEvent]


def round_row(meta: VersionMeta) -> RoundRow:
    trigger = meta.trigger
    return RoundRow(
        version=meta.version,
        created=meta.created,
        trigger=None if trigger is None else trigger.kind,
        trigger_value=None if trigger is None else trigger.value,
        reason="" if trigger is None else trigger.reason,
        outcome=OUTCOMES.get(meta.status, meta.status),
        gate=meta.gate,
        online={stage: v.reason for stage, v in meta.online.items()},
    )


def version_row(meta: VersionMeta, quality: VersionQuality | None) -> VersionRow:
    measured = {} if quality is None else asdict(quality)
    return VersionRow.model_validate(
        {**measured, "version": meta.version, "status": meta.status, "created": meta.created}
    )


def assemble(status: Status, watch: WatchView, registry: Registry, task: Task) -> Dashboard:
    """The ``/v1/dashboard`` payload (drawn by ``services/dashboard.html``)."""
    metas = [registry.get(v) for v in registry.versions()[-ROUNDS:]][::-1]  # newest first
    quality = {q.version: q for q in watch.versions}
    return Dashboard(
        generated_at=time.time(),
        task=task.name,
        labels=list(task.label_names),
        current_version=status.current_version,
        rollout=status.rollout,
        rollout_verdict=status.rollout_verdict,
        round_running=status.round_running,
        round_progress=status.round_progress,
        last_error=status.last_error,
        teacher=status.teacher,
        trust=status.trust,
        series=watch.series,
        versions=[version_row(m, quality.get(m.version)) for m in metas],
        rounds=[round_row(m) for m in metas],
        trigger=_trigger(status),
        drift=watch.drift,
        reports=watch.reports,
        events=registry.history()[-EVENTS:][::-1],
    )


def _trigger(status: Status) -> TriggerRow | None:
    if status.trigger is None:
        return None
    signals = status.signals
    values = TriggerValues(
        labels=status.labels_since_last_round,
        minutes=status.minutes_since_last_round,
        drift=None if signals is None else signals.drift,
        disagreement=None if signals is None else signals.disagreement,
        negative_share=None if signals is None else signals.negative_share,
    )
    return TriggerRow(**status.trigger.model_dump(), values=values)
