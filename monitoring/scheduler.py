"""The retraining scheduler: one named Ray actor that watches the store and starts rounds.

Every ``drift_every_s`` it measures drift and label-free quality (``monitoring.watch``); every
``poll_s`` it drives a running rollout (``monitoring.promotion``), or asks ``triggers.decide``
whether a round starts, on the newest measurement and the labels since the last round. It exports
both as gauges. This module is the loop only: ticks, the round lock, status; everything from a
registered candidate to a promoted (or rolled back) student is ``monitoring.promotion``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from distillery.actors import labeler_health
from distillery.contracts import (
    OperatorAnswer,
    RoundProgress,
    RoundReport,
    Swap,
    TriggerRecord,
    VariantReport,
)
from distillery.settings import SchedulerSettings, Settings
from distillery.task import Task
from feedback import trust_report
from feedback.examples import count_labels_since
from monitoring.dashboard import Dashboard, assemble
from monitoring.promotion import Promotion
from monitoring.relabel import Relabeler
from monitoring.reports import ReportListing
from monitoring.status import (
    CascadeView,
    Deferral,
    Measurement,
    Status,
    TriggerView,
    TrustView,
)
from monitoring.teacher_status import current_teacher_id, teacher_status
from monitoring.triggers import Decision, Signals, TriggerState, decide
from monitoring.watch import Watch
from training import cycle, generate_cycle
from training.gate import TooFewHeldOut
from training.registry import Registry

log = logging.getLogger(__name__)


class Scheduler:
    """Runs as a threaded Ray actor: ``run``, a round, ``status`` and replica reports at once."""

    def __init__(self, settings: Settings, task: Task, dashboard_url: str | None) -> None:
        import torch

        torch.set_num_threads(1)
        self.settings = settings
        self.task = task
        self.dashboard_url = dashboard_url
        self.registry = Registry(settings.paths.model_store_url())
        self._round_lock = threading.Lock()
        self._stop = threading.Event()
        self.last_round: RoundReport | None = None
        self.last_error: str | None = None
        self.deferred: Deferral | None = None  # a fired round waiting for a holdout
        self.watch = Watch(settings, task, self.registry)
        self.signals: Signals | None = None  # the newest measurement's
        self.decision: Decision | None = None  # the newest trigger decision
        self.trigger_state = TriggerState(
            last_round_at=cycle.last_round_end(self.registry)[1] or None
        )
        self._metrics: Any = None
        self.serving: dict[str, int] = {}  # Serve replica id → student version it answers with
        self.progress: RoundProgress | None = None  # the running round's, from its workers
        self.promotion = Promotion(settings, self.registry, dashboard_url, self.replicas)
        self.relabeler = Relabeler(settings)

    def bootstrap(self) -> RoundReport | None:
        generate = self.task.kind == "generate"
        with self._round_lock:
            report = (generate_cycle if generate else cycle).bootstrap(self.settings, self.task)
        if report is not None:
            self.last_round = report
        return self.last_round

    def deploy_current(self) -> int:
        """Deploy the registry's state (current version, any rollout candidate); wait for it."""
        self.promotion.redeploy()
        current = self.registry.current()
        if current is None:
            raise RuntimeError("the registry has no promoted version to serve")
        return current

    def report_serving(self, replica: str, version: int) -> None:
        """Called by each replica once it answers with ``version``."""
        self.serving[replica] = version

    def replicas(self) -> dict[str, int]:
        return dict(self.serving)

    def promote(self, version: int, reason: str) -> Swap:
        """Make a registered ``version`` the served one now (ending any rollout); returns when
        every replica has it."""
        if self.dashboard_url is None:
            raise RuntimeError("no dashboard address: cannot deploy")
        with self._round_lock, self.promotion.lock:
            start = time.monotonic()
            self.promotion.promote_now(version, reason)
            promoted_at = time.time()
            self.promotion.apply(wait=True)
        return Swap(
            version=version, promoted_at=promoted_at, swapped_at=time.time(),
            swap_s=round(time.monotonic() - start, 3),
        )  # fmt: skip

    def retrain(
        self, reason: str = "operator: distillery retrain", trigger: TriggerRecord | None = None
    ) -> RoundReport:
        """One round now (waits for a running one to finish first); refused during a rollout.
        ``trigger`` is recorded with the version; default: an operator's."""
        trigger = trigger or TriggerRecord.operator(reason)
        with self._round_lock:
            try:
                self._no_rollout_running()
                report = self._round(reason, trigger)
                self._after_round(report)
            except TooFewHeldOut:
                self._metric("rounds", trigger=trigger.kind, outcome="deferred")
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._metric("rounds", trigger=trigger.kind, outcome="error")
                raise
            finally:
                self.trigger_state = TriggerState(time.time(), self.trigger_state.disarmed)
        self._metric("rounds", trigger=trigger.kind, outcome=report.outcome)
        self.last_round, self.deferred = report, None
        return report

    def run(self) -> None:
        from distillery.metrics import loop_metrics

        self._metrics = self.promotion.metrics = loop_metrics()
        next_measure = time.monotonic()
        while not self._stop.wait(self.settings.scheduler.poll_s):
            try:
                if time.monotonic() >= next_measure:
                    next_measure = time.monotonic() + self.settings.scheduler.drift_every_s
                    self.measure()
                self.tick()
                if self.settings.teacher.old_labels == "relabel":
                    self.relabeler.tick(current_teacher_id(self.settings.teacher, self.task))
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduler tick failed")

    def tick(self) -> bool:
        """Drive the rollout if one runs; else start a round if a trigger fires (True if one
        ran): a new round waits until the rollout before it has ended."""
        self.promotion.tick(round_running=self._round_lock.locked())
        if self.registry.rollout() is not None:
            return False
        new_labels, minutes = self._since_last_round()
        self._export_state(new_labels)
        if self.deferred is not None and new_labels < self.deferred.retry_at_labels:
            return False
        signals = replace(
            self.signals or Signals(0, 0.0), new_labels=new_labels, minutes_since_round=minutes
        )
        decision = decide(signals, self.trigger_state, time.time(), self._triggers())
        self.decision = decision
        if decision.fire and not self.settings.scheduler.enabled:
            return False  # no round starts, so no cooldown begins and no signal is disarmed
        before, self.trigger_state = self.trigger_state, decision.state  # re-armed stay re-armed
        if not decision.fire:
            return False
        assert decision.kind is not None  # a decision that fires names its trigger
        trigger = TriggerRecord(kind=decision.kind, value=decision.value, reason=decision.reason)
        try:
            self.retrain(f"scheduler: {decision.reason}", trigger)
        except TooFewHeldOut as short:  # no round ran: no cooldown starts, nothing is disarmed
            self.trigger_state = before
            self.deferred = Deferral(
                reason=f"{trigger.kind}: {decision.reason}; {short}",
                retry_at_labels=new_labels + short.more_labels,
            )
            log.info("round deferred: %s", self.deferred.reason)
            return False
        return True

    def _triggers(self) -> SchedulerSettings:
        """The trigger settings; a generate task's disagreement is on chrF, with its own bar."""
        cfg = self.settings.scheduler
        if self.task.kind != "generate":
            return cfg
        return cfg.model_copy(update={"disagreement_threshold": cfg.reply_disagreement_threshold})

    def _since_last_round(self) -> tuple[int, float]:
        window_end, created = cycle.last_round_end(self.registry)
        labels = count_labels_since(self.settings.paths.store_dir, window_end)
        return labels, (time.time() - created) / 60 if created else 0.0

    def measure(self) -> Measurement:
        """Measure drift and quality now; returns the signals and what the triggers decide on
        them (a decision only: rounds start from ``tick``)."""
        new_labels, minutes = self._since_last_round()
        if self.task.kind == "generate":  # prompt drift, reply quality and feedback
            self.signals = self.watch.measure_replies(new_labels, minutes)
        else:
            self.signals = self.watch.measure(new_labels, minutes)
        decision = decide(self.signals, self.trigger_state, time.time(), self._triggers())
        self._export(self.signals)
        return Measurement(
            signals=self.signals, trigger=TriggerView.of(decision), drift=self.watch.drift
        )

    def _export_state(self, new_labels: int) -> None:
        """Gauges re-set every tick, so that a scrape between rounds still sees them."""
        if self._metrics is None:
            return
        self._metrics.labels_since_round.set(new_labels)
        self._metrics.current_version.set(self.registry.current() or 0)
        progress = self.progress if self._round_lock.locked() else None
        self._metrics.round_progress.set(0.0 if progress is None else progress.done)
        if self.progress is not None:
            self._metrics.round_loss.set(self.progress.loss)
            self._metrics.round_examples_per_s.set(self.progress.examples_per_s)

    def _export(self, signals: Signals) -> None:
        if self._metrics is None:
            return
        for kind, share in (self.watch.drift.share if self.watch.drift else {}).items():
            self._metrics.drift_share.set(share, tags={"kind": kind})
        if signals.disagreement is not None:
            self._metrics.disagreement.set(signals.disagreement)
        if signals.negative_share is not None:
            self._metrics.negative_feedback.set(signals.negative_share)

    def _metric(self, name: str, **tags: str) -> None:
        if self._metrics is not None:
            getattr(self._metrics, name).inc(tags=tags)

    def status(self) -> Status:
        new_labels, minutes = self._since_last_round()
        running = self.registry.rollout()
        verdict = self.promotion.last_verdict if running is not None else None
        return Status(
            rollout=running,
            rollout_verdict=verdict,
            current_version=self.registry.current(),
            versions=self.registry.versions(),
            labels_since_last_round=new_labels,
            minutes_since_last_round=round(minutes, 2),
            round_running=self._round_lock.locked(),
            round_progress=self.round_progress(),
            last_round=self.last_round,
            last_error=self.last_error,
            deferred=self.deferred,
            drift=self.watch.drift,
            signals=self.signals,
            trigger=None if self.decision is None else TriggerView.of(self.decision),
            replicas=self.replicas(),
            teacher=teacher_status(
                self.settings.teacher, self.task, self.registry, labeler_health()
            ),
            trust=self._trust(),
            cascade=self._cascade(),
        )

    def status_json(self) -> str:
        """``status`` as JSON, for the HTTP edge (``GET /v1/status``)."""
        return self.status().model_dump_json()

    def _cascade(self) -> CascadeView:
        """The deployment's default ``min_confidence`` and the threshold offered for the
        serving student at its gate (``training.selective``; None before any gate)."""
        current = self.registry.current()
        offered = None if current is None else self.registry.get(current).cascade
        return CascadeView(
            min_confidence=self.settings.cascade.min_confidence, offered=offered, version=current
        )

    def _trust(self) -> TrustView | None:
        """The last round's trust estimate: the teacher's reliability and the keys ranked by
        reliability, then volume (``feedback.trust_report``); None before one exists."""
        model = trust_report.load(self.settings.paths.state_dir)
        if model is None:
            return None
        return TrustView(
            mode=self.settings.trust.mode,
            teacher=model.teacher,
            keys=model.ranked(),
            members=model.members,
        )

    def dashboard(self) -> Dashboard:
        """The operator page's data (``monitoring.dashboard.assemble``)."""
        return assemble(self.status(), self.watch.dashboard(), self.registry, self.task)

    def dashboard_json(self) -> str:
        """``dashboard`` as JSON, for the HTTP edge (``GET /v1/dashboard``)."""
        return self.dashboard().model_dump_json()

    def drift_reports_json(self) -> str:
        """The kept drift reports, newest first, as ``GET /v1/reports`` answers them."""
        return ReportListing(reports=self.watch.reports.listing()).model_dump_json()

    def report_html(self, name: str) -> bytes | None:
        """One drift report's HTML; None when there is no report of that name."""
        try:
            return self.watch.reports.read(name)
        except KeyError:
            return None

    def stop(self) -> None:
        self._stop.set()

    # ---- what the layers below report ----

    def report_progress(self, progress: RoundProgress) -> None:
        """Called by a round's rank-0 worker every few batches. Shown by ``status`` and
        exported to Prometheus."""
        self.progress = progress
        if self._metrics is not None:
            self._metrics.round_progress.set(progress.done)
            self._metrics.round_loss.set(progress.loss)
            self._metrics.round_examples_per_s.set(progress.examples_per_s)

    def round_progress(self) -> RoundProgress | None:
        """The running round's progress, None between rounds: what progress bars poll, without
        the cost of a whole ``status``."""
        running = self.progress is not None and self._round_lock.locked()
        return self.progress if running else None

    def report_variants(self, replica: str, report: VariantReport) -> None:
        """Called by each replica every ``rollout.report_s`` during a rollout."""
        self.promotion.report_variants(replica, report)

    def submit(self, model_dir: str, reason: str = "operator: distillery submit") -> RoundReport:
        """Register a student trained elsewhere; it is gated and rolled out like a round's."""
        with self._round_lock:
            self._no_rollout_running()
            report = cycle.submit(
                self.settings, self.task, Path(model_dir), reason, self._serving()
            )
            self._after_round(report)
        self.last_round = report
        return report

    def operate(self, action: str, reason: str, version: int | None = None) -> OperatorAnswer:
        """An operator's ``promote``, ``rollback``, ``pause`` or ``resume`` (``Promotion``)."""
        return self.promotion.operate(action, reason, version)

    def _no_rollout_running(self) -> None:
        running = self.registry.rollout()
        if running is not None:
            raise RuntimeError(
                f"v{running.candidate} is rolling out ({running.stage}): promote, roll back or "
                "wait for it before a new candidate"
            )

    def _serving(self) -> bool:
        return self.dashboard_url is not None

    def _round(self, reason: str, trigger: TriggerRecord) -> RoundReport:
        if self.task.kind == "generate":
            return generate_cycle.retrain(
                self.settings, self.task, reason, trigger, self._serving()
            )
        return cycle.retrain(self.settings, self.task, reason, trigger, self._serving())

    def _after_round(self, report: RoundReport) -> None:
        """Serve learns the round's outcome: a promoted version on every replica before this
        returns, a rollout's candidate loading beside the stable student."""
        with self.promotion.lock:
            self.promotion.apply(wait=report.outcome == "promoted")
