"""The retraining scheduler: one named Ray actor that watches the store and starts rounds.

Every ``poll_s`` it counts teacher labels since the last round and asks ``triggers.should_retrain``;
every ``drift_every_s`` it measures input and prediction drift (Evidently) between the training
window and recent traffic and exports the share as a gauge.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from distillery.settings import Settings
from distillery.task import Task
from feedback.store import count_labels_since, read_labels
from monitoring.triggers import should_retrain
from training import cycle
from training.registry import Registry

log = logging.getLogger(__name__)
ACTOR_NAME = "distillery-scheduler"
NAMESPACE = "distillery"


class Scheduler:
    """Runs as a threaded Ray actor: ``run``, a round, ``status`` and replica reports at once."""

    def __init__(self, settings: Settings, task: Task, dashboard_url: str | None) -> None:
        import torch

        torch.set_num_threads(1)
        self.settings = settings
        self.task = task
        self.dashboard_url = dashboard_url
        self.registry = Registry(settings.paths.registry_dir)
        self._round_lock = threading.Lock()
        self._stop = threading.Event()
        self.last_round: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.drift: dict[str, Any] | None = None
        self._metrics: Any = None
        self.serving: dict[str, int] = {}  # Serve replica id → student version it answers with

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
        return cycle.hot_swap(self.settings, self.registry, self._dashboard(), self.replicas)

    def report_serving(self, replica: str, version: int) -> None:
        """Called by each replica once it answers with ``version``."""
        self.serving[replica] = version

    def replicas(self) -> dict[str, int]:
        return dict(self.serving)

    def promote(self, version: int, reason: str) -> dict[str, Any]:
        """Make a registered ``version`` the served one now; returns when every replica has it."""
        dashboard_url = self._dashboard()
        with self._round_lock:
            start = time.monotonic()
            self.registry.promote(version, reason)
            promoted_at = time.time()
            cycle.hot_swap(self.settings, self.registry, dashboard_url, self.replicas)
        return {
            "version": version,
            "promoted_at": promoted_at,
            "swapped_at": time.time(),
            "swap_s": round(time.monotonic() - start, 3),
        }

    def retrain(self, reason: str = "operator: distillery retrain") -> dict[str, Any]:
        """One round now (waits for a running one to finish first)."""
        with self._round_lock:
            try:
                report = cycle.retrain(
                    self.settings, self.task, self.dashboard_url, reason, self.replicas
                )
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._metric("rounds", outcome="error")
                raise
        self.last_round = asdict(report)
        self._metric("rounds", outcome="promoted" if report.promoted else "rejected")
        return self.last_round

    def run(self) -> None:
        from monitoring.metrics import loop_metrics

        self._metrics = loop_metrics()
        next_drift = time.monotonic() + self.settings.scheduler.drift_every_s
        while not self._stop.wait(self.settings.scheduler.poll_s):
            try:
                self.tick()
                if time.monotonic() >= next_drift:
                    next_drift = time.monotonic() + self.settings.scheduler.drift_every_s
                    self.measure_drift()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduler tick failed")

    def tick(self) -> bool:
        """Start a round if a trigger fires; True if one ran."""
        new_labels, minutes = self._since_last_round()
        if self._metrics is not None:
            self._metrics.labels_since_round.set(new_labels)
            current = self.registry.current()
            self._metrics.current_version.set(current or 0)
        trigger = should_retrain(new_labels, minutes, self.settings.scheduler)
        if not trigger.fire or not self.settings.scheduler.enabled:
            return False
        self.retrain(f"scheduler: {trigger.reason}")
        return True

    def _since_last_round(self) -> tuple[int, float]:
        window_end, created = cycle.last_round_end(self.registry)
        labels = count_labels_since(self.settings.paths.store_dir, window_end)
        return labels, (time.time() - created) / 60 if created else 0.0

    def measure_drift(self) -> dict[str, Any] | None:
        from monitoring.drift import data_drift, text_features

        labels = read_labels(self.settings.paths.store_dir)
        if labels.empty:
            return None
        since = cycle.window_start(self.registry)
        reference = labels[labels["ts"] <= since].tail(self.settings.train.window_size)
        current = labels[labels["ts"] > since].tail(self.settings.train.window_size)
        if min(len(reference), len(current)) < 30:
            return None
        frames = [text_features(list(f["text"]), self._predicted(f)) for f in (reference, current)]
        result = data_drift(frames[0], frames[1])
        self.drift = asdict(result)
        if self._metrics is not None:
            self._metrics.drift_share.set(result.drift_share)
        return self.drift

    def _predicted(self, frame: Any) -> list[str]:
        probs = np.array(list(frame["student_probs"]))  # (N, C)
        return [self.task.label_names[i] for i in probs.argmax(1)]

    def _metric(self, name: str, **tags: str) -> None:
        if self._metrics is not None:
            getattr(self._metrics, name).inc(tags=tags)

    def status(self) -> dict[str, Any]:
        new_labels, minutes = self._since_last_round()
        return {
            "current_version": self.registry.current(),
            "versions": self.registry.versions(),
            "labels_since_last_round": new_labels,
            "minutes_since_last_round": round(minutes, 2),
            "round_running": self._round_lock.locked(),
            "last_round": self.last_round,
            "last_error": self.last_error,
            "drift": self.drift,
            "replicas": self.replicas(),
        }

    def stop(self) -> None:
        self._stop.set()
