"""The retraining scheduler: one named Ray actor that watches the store and starts rounds.

Every ``drift_every_s`` it measures drift and label-free quality (``monitoring.watch``); every
``poll_s`` it drives a running rollout, or asks ``triggers.decide`` whether a round starts, on
the newest measurement and the labels since the last round. It exports both as gauges.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from distillery.settings import Settings
from distillery.task import Task
from feedback.store import count_labels_since, read_kind
from monitoring.relabel import Relabeler
from monitoring.teacher_status import current_teacher_id, live_health, teacher_status
from monitoring.triggers import Decision, Signals, TriggerState, decide
from monitoring.watch import Watch
from services.variants import merge
from training import cycle, rollout
from training.registry import Registry
from training.rollout import Evidence, Rollout

log = logging.getLogger(__name__)
ACTOR_NAME = "distillery-scheduler"
HEAL_S = 30.0  # how often Serve's deployed version is checked against the registry
NAMESPACE = "distillery"


def find_scheduler() -> Any | None:
    """The running scheduler actor's handle, or None when there is none (yet)."""
    import ray

    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


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
        self.last_round: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.watch = Watch(settings, task, self.registry)
        self.signals: Signals | None = None  # the newest measurement's
        self.decision: Decision | None = None  # the newest trigger decision
        self.trigger_state = TriggerState(
            last_round_at=cycle.last_round_end(self.registry)[1] or None
        )
        self._metrics: Any = None
        self.serving: dict[str, int] = {}  # Serve replica id → student version it answers with
        self.reports: dict[str, dict[str, Any]] = {}  # replica id → its newest rollout counts
        self.last_verdict: dict[str, Any] | None = None
        self.progress: dict[str, Any] | None = None  # the running round's, from its workers
        self._rollout_lock = threading.RLock()
        self._applied: tuple[int | None, Any] | None = None  # what Serve was last told to run
        self._next_heal = 0.0  # monotonic s
        self.relabeler = Relabeler(settings)

    def bootstrap(self) -> dict[str, Any] | None:
        with self._round_lock:
            report = cycle.bootstrap(self.settings, self.task)
        if report is not None:
            self.last_round = asdict(report)
        return self.last_round

    def _dashboard(self) -> str:
        if self.dashboard_url is None:
            raise RuntimeError("no dashboard address: cannot deploy")
        return self.dashboard_url

    def deploy_current(self) -> int:
        """Deploy the registry's state (current version, any rollout candidate); wait for it."""
        with self._rollout_lock:
            self._applied = None
            self._apply(self._dashboard(), wait=True)
        current = self.registry.current()
        if current is None:
            raise RuntimeError("the registry has no promoted version to serve")
        return current

    def report_serving(self, replica: str, version: int) -> None:
        """Called by each replica once it answers with ``version``."""
        self.serving[replica] = version

    def replicas(self) -> dict[str, int]:
        return dict(self.serving)

    def promote(self, version: int, reason: str) -> dict[str, Any]:
        """Make a registered ``version`` the served one now (ending any rollout); returns when
        every replica has it."""
        dashboard_url = self._dashboard()
        with self._round_lock, self._rollout_lock:
            start = time.monotonic()
            self._promote_now(version, reason)
            promoted_at = time.time()
            self._apply(dashboard_url, wait=True)
        return {
            "version": version,
            "promoted_at": promoted_at,
            "swapped_at": time.time(),
            "swap_s": round(time.monotonic() - start, 3),
        }

    def retrain(
        self, reason: str = "operator: distillery retrain", trigger: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One round now (waits for a running one to finish first); refused during a rollout.
        ``trigger`` (kind, value, reason) is recorded with the version; default: an operator's."""
        trigger = trigger or {"kind": "operator", "value": None, "reason": reason}
        with self._round_lock:
            try:
                self._no_rollout_running()
                report = cycle.retrain(
                    self.settings, self.task, self.dashboard_url, reason, self.replicas, trigger
                )
                self._deployed_by_cycle()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._metric("rounds", trigger=trigger["kind"], outcome="error")
                raise
            finally:
                self.trigger_state = TriggerState(time.time(), self.trigger_state.disarmed)
        self.last_round = asdict(report)
        self._metric("rounds", trigger=trigger["kind"], outcome=report.outcome)
        return self.last_round

    def run(self) -> None:
        from monitoring.metrics import loop_metrics

        self._metrics = loop_metrics()
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
        self.rollout_tick()
        if self.registry.rollout() is not None:
            return False
        new_labels, minutes = self._since_last_round()
        self._export_state(new_labels)
        signals = replace(
            self.signals or Signals(0, 0.0), new_labels=new_labels, minutes_since_round=minutes
        )
        decision = decide(signals, self.trigger_state, time.time(), self.settings.scheduler)
        self.decision = decision
        if decision.fire and not self.settings.scheduler.enabled:
            return False  # no round starts, so no cooldown begins and no signal is disarmed
        self.trigger_state = decision.state  # re-armed signals stay re-armed
        if not decision.fire:
            return False
        trigger = {"kind": decision.kind, "value": decision.value, "reason": decision.reason}
        self.retrain(f"scheduler: {decision.reason}", trigger)
        return True

    def _since_last_round(self) -> tuple[int, float]:
        window_end, created = cycle.last_round_end(self.registry)
        labels = count_labels_since(self.settings.paths.store_dir, window_end)
        return labels, (time.time() - created) / 60 if created else 0.0

    def measure(self) -> dict[str, Any]:
        """Measure drift and quality now; returns the signals and what the triggers decide on
        them (a decision only: rounds start from ``tick``)."""
        new_labels, minutes = self._since_last_round()
        self.signals = self.watch.measure(new_labels, minutes)
        decision = decide(self.signals, self.trigger_state, time.time(), self.settings.scheduler)
        self._export(self.signals)
        return {
            "signals": asdict(self.signals),
            "decision": _decision_dict(decision),
            "drift": self.watch.drift,
        }

    def _export_state(self, new_labels: int) -> None:
        """Gauges re-set every tick, so that a scrape between rounds still sees them."""
        if self._metrics is None:
            return
        self._metrics.labels_since_round.set(new_labels)
        self._metrics.current_version.set(self.registry.current() or 0)
        progress = self.progress if self._round_lock.locked() else None
        self._metrics.round_progress.set(0.0 if progress is None else progress["done"])
        if self.progress is not None:
            self._metrics.round_loss.set(self.progress["loss"])
            self._metrics.round_examples_per_s.set(self.progress["examples_per_s"])

    def _export(self, signals: Signals) -> None:
        if self._metrics is None:
            return
        for kind, share in ((self.watch.drift or {}).get("share") or {}).items():
            self._metrics.drift_share.set(share, tags={"kind": kind})
        if signals.disagreement is not None:
            self._metrics.disagreement.set(signals.disagreement)
        if signals.negative_share is not None:
            self._metrics.negative_feedback.set(signals.negative_share)

    def _metric(self, name: str, **tags: str) -> None:
        if self._metrics is not None:
            getattr(self._metrics, name).inc(tags=tags)

    def status(self) -> dict[str, Any]:
        new_labels, minutes = self._since_last_round()
        running = self.registry.rollout()
        return {
            "rollout": None if running is None else running.model_dump(),
            "rollout_verdict": self.last_verdict if running is not None else None,
            "current_version": self.registry.current(),
            "versions": self.registry.versions(),
            "labels_since_last_round": new_labels,
            "minutes_since_last_round": round(minutes, 2),
            "round_running": self._round_lock.locked(),
            "round_progress": self.progress if self._round_lock.locked() else None,
            "last_round": self.last_round,
            "last_error": self.last_error,
            "drift": self.watch.drift,
            "signals": None if self.signals is None else asdict(self.signals),
            "trigger": None if self.decision is None else _decision_dict(self.decision),
            "replicas": self.replicas(),
            "teacher": teacher_status(
                self.settings.teacher, self.task, self.registry, live_health()
            ),
        }

    def dashboard(self) -> dict[str, Any]:
        """The operator page's data (``monitoring.dashboard.assemble``)."""
        from monitoring.dashboard import assemble

        return assemble(self.status(), self.watch.dashboard(), self.registry, self.task)

    def drift_reports(self) -> list[dict[str, Any]]:
        """The kept drift reports, newest first."""
        return self.watch.reports.listing()

    def report_html(self, name: str) -> bytes | None:
        """One drift report's HTML; None when there is no report of that name."""
        try:
            return self.watch.reports.read(name)
        except KeyError:
            return None

    def stop(self) -> None:
        self._stop.set()

    # ---- rollout: shadow → canary → full, automatic rollback, operator actions ----

    def report_progress(self, progress: dict[str, Any]) -> None:
        """Called by a round's rank-0 worker every few batches: epoch, done (0–1), loss,
        examples_per_s. Shown by ``status`` and exported to Prometheus."""
        self.progress = progress
        if self._metrics is not None:
            self._metrics.round_progress.set(progress["done"])
            self._metrics.round_loss.set(progress["loss"])
            self._metrics.round_examples_per_s.set(progress["examples_per_s"])

    def report_variants(self, replica: str, snapshot: dict[str, Any]) -> None:
        """Called by each replica every ``rollout.report_s`` during a rollout."""
        self.reports[replica] = snapshot

    def submit(self, model_dir: str, reason: str = "operator: distillery submit") -> dict[str, Any]:
        """Register a student trained elsewhere; it is gated and rolled out like a round's."""
        with self._round_lock:
            self._no_rollout_running()
            report = cycle.submit(
                self.settings, self.task, Path(model_dir), self.dashboard_url, reason,
                self.replicas,
            )  # fmt: skip
            self._deployed_by_cycle()
        self.last_round = asdict(report)
        return self.last_round

    def _no_rollout_running(self) -> None:
        running = self.registry.rollout()
        if running is not None:
            raise RuntimeError(
                f"v{running.candidate} is rolling out ({running.stage}): promote, roll back or "
                "wait for it before a new candidate"
            )

    def evidence(self, running: Rollout) -> tuple[Evidence, Evidence, float | None]:
        """(stable, candidate, shadow agreement with the stable student) live since the stage
        began: the replicas' counts, the store's teacher labels (in shadow, the same mirrored
        texts for both) and feedback."""
        merged = merge(list(self.reports.values()), running.key)
        store, since = self.settings.paths.store_dir, running.stage_started_at
        labels = read_kind(store, "labels", written_after=since)
        if not labels.empty:
            predicted = labels.get("predicted_at", labels["ts"]).fillna(labels["ts"])
            labels = labels[predicted.astype(float) >= since].drop_duplicates("request_id")
        feedback = read_kind(store, "feedback", written_after=since)
        shadow = running.stage == "shadow"
        if not shadow and "reason" in labels:
            # canary: each version's own margins and novelty steer the targeted picks, so only
            # uniform picks compare the two fairly (measured: 0.57 vs 0.86 on all picks for a
            # candidate the gate had found as good)
            labels = labels[labels["reason"] == "uniform"]
        paired = labels
        if shadow:
            mirrored = "shadow_version" in labels and not labels.empty
            paired = (
                labels[labels["shadow_version"] == running.candidate] if mirrored else labels[:0]
            )
        bad = self.settings.train.bad_rating_max
        out = []
        for version, rows, own in (
            (running.stable, paired, False),
            (running.candidate, labels, shadow),
        ):
            labelled, agreed = rollout.teacher_evidence(rows, version, own)
            rated, negative = rollout.feedback_evidence(feedback, version, bad)
            base = merged.evidence.get(version, Evidence())
            out.append(
                replace(base, labelled=labelled, agreed=agreed, rated=rated, negative=negative)
            )
        with_stable = merged.agreed / merged.compared if merged.compared else None
        return out[0], out[1], with_stable

    def rollout_tick(self) -> dict[str, Any] | None:
        """Judge the running rollout on its evidence and act: wait, advance or roll back."""
        with self._rollout_lock:
            self._heal()
            self._apply(self.dashboard_url, wait=False)
            running = self.registry.rollout()
            self._metric_stage(running)
            if running is None or running.paused:
                return None
            stable, candidate, with_stable = self.evidence(running)
            elapsed = time.time() - running.stage_started_at
            verdict = rollout.evaluate(
                running.stage, elapsed, stable, candidate, self.settings.rollout
            )
            self.last_verdict = {
                **verdict.to_dict(), "stable": asdict(stable), "candidate": asdict(candidate),
                "shadow_agreement_with_stable": with_stable,
            }  # fmt: skip
            reason = f"automatic: {verdict.reason}"
            if verdict.action == "rollback":
                self.registry.roll_back(reason, self.last_verdict)
                self._transition("rolled_back")
            elif verdict.action == "advance" and running.stage == "shadow":
                self.registry.advance("canary", reason, self.last_verdict)
                self._transition("canary")
            elif verdict.action == "advance":
                self.registry.finish(reason, self.last_verdict)
                self._transition("promoted")
            if verdict.action != "wait":
                log.info("rollout of v%d: %s", running.candidate, reason)
                self._apply(self.dashboard_url, wait=verdict.action == "advance")
            return self.last_verdict

    def operate(self, action: str, reason: str, version: int | None = None) -> dict[str, Any]:
        """An operator's ``promote`` (``version``, default the candidate), ``rollback``,
        ``pause`` or ``resume``; {"ok": False, "detail": why} when it does not apply now."""
        try:
            with self._rollout_lock:
                if action == "promote":
                    detail = self._promote_now(version, reason)
                elif action == "rollback":
                    detail = self._roll_back_now(reason)
                elif action in ("pause", "resume"):
                    self.registry.set_paused(action == "pause", reason)
                    detail = f"rollout {action}d"
                else:
                    raise ValueError(f"unknown action {action!r}")
                self._apply(self.dashboard_url, wait=action in ("promote", "rollback"))
        except (ValueError, KeyError) as exc:
            return {"ok": False, "detail": str(exc).strip("'\"")}
        running = self.registry.rollout()
        return {
            "ok": True,
            "detail": detail,
            "current_version": self.registry.current(),
            "rollout": None if running is None else running.model_dump(),
        }

    def _promote_now(self, version: int | None, reason: str) -> str:
        running = self.registry.rollout()
        if version is None and running is None:
            raise ValueError("no rollout in progress: name the version to promote")
        if running is not None and version in (None, running.candidate):
            self.registry.finish(reason)
            self._transition("promoted")
            return f"v{running.candidate} promoted"
        assert version is not None
        self.registry.get(version)  # raises KeyError naming an unknown version
        if running is not None:
            self.registry.roll_back(f"superseded: v{version} promoted ({reason})")
            self._transition("rolled_back")
        self.registry.promote(version, reason)
        self._transition("promoted")
        return f"v{version} promoted"

    def _roll_back_now(self, reason: str) -> str:
        if self.registry.rollout() is not None:
            version = self.registry.roll_back(reason)
            self._transition("rolled_back")
            return f"v{version} rolled back; v{self.registry.current()} serves everyone"
        previous = self.registry.demote(reason)
        self._transition("rolled_back")
        return f"rolled back to v{previous}"

    def _state(self) -> tuple[int | None, Any]:
        """What Serve should run: the current version and the rollout candidate's spec."""
        return self.registry.current(), cycle.candidate_spec(self.settings, self.registry)

    def _apply(self, dashboard_url: str | None, wait: bool) -> None:
        """Tell Serve the registry's state (current version + rollout candidate) if it changed
        since it was last told; with ``wait``, until every replica answers with the current."""
        state = self._state()
        if dashboard_url is None or state[0] is None or state == self._applied:
            return
        cycle.hot_swap(self.settings, self.registry, dashboard_url, self.replicas if wait else None)
        self._applied = state

    def _heal(self) -> None:
        """Every ``HEAL_S``: if Serve's target config names another version than the registry's
        current (e.g. a KubeRay operator restart re-applied its ``serveConfigV2``), forget
        what was applied, so that ``_apply`` deploys the registry's state again."""
        if self.dashboard_url is None or time.monotonic() < self._next_heal:
            return
        self._next_heal = time.monotonic() + HEAL_S
        if self._round_lock.locked():  # a round deploys what it decides itself
            return
        from services.deploy import deployed_version

        deployed, current = deployed_version(self.dashboard_url), self.registry.current()
        if deployed is not None and current is not None and deployed != current:
            log.warning(
                "Serve runs v%d but the registry serves v%d: redeploying", deployed, current
            )
            self._applied = None

    def _deployed_by_cycle(self) -> None:
        """A round or a submission deploys what it decided itself (``cycle.admit``): note it,
        so that the next tick does not deploy the same config again."""
        if self.dashboard_url is not None:
            self._applied = self._state()

    def _transition(self, to: str) -> None:
        self._metric("rollout_transitions", to=to)

    def _metric_stage(self, running: Rollout | None) -> None:
        if self._metrics is not None:
            stage = 0 if running is None else {"shadow": 1, "canary": 2}[running.stage]
            self._metrics.rollout_stage.set(stage)


def _decision_dict(decision: Decision) -> dict[str, Any]:
    return {
        "fire": decision.fire,
        "kind": decision.kind,
        "value": decision.value,
        "reason": decision.reason,
        "cooldown_until": decision.cooldown_until,
        "disarmed": sorted(decision.state.disarmed),
    }
