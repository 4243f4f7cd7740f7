"""The scheduler's eyes: drift and label-free quality, measured on the example store.

``Watch.measure`` compares the serving version's training window with the traffic since (the
newest ``monitor.current_rows``), on three kinds of columns (``monitoring.features``): text
features, the serving student's embedding components, its predictions. The reference is the
newest ``monitor.reference_rows`` rows up to the window's end that rounds hold out
(``training.data.held_out``): the serving student never trained on them, so its embeddings
and confidence compare like with like (on its own training rows it is more confident and
embeds them apart, which reads as drift: 0.8 of the columns on unseen movie reviews against
the seed movies v1 trained on, in ``tests/integration/test_drift_trigger.py``). It also measures
teacher–student disagreement and feedback over the last ``monitor.signal_window_s``, per
version. Each measurement becomes one point of a bounded series (kept in
``state/monitor/series.json``, so a restarted scheduler keeps its history), feeds the triggers'
``Signals``, and every ``monitor.html_every`` checks saves Evidently's HTML report. Each check is
also written to the Evidently workspace that ``evidently ui`` serves
(``monitoring.evidently_workspace``); a failure there is logged and never fails the check.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from distillery.files import write_atomic
from distillery.settings import Settings
from distillery.task import Task
from feedback.examples import from_keys, read_kind, read_labels, recent
from feedback.keys import rating_keys
from monitoring import quality
from monitoring.dashboard import SeriesPoint, WatchView
from monitoring.drift_columns import columns_for
from monitoring.evidently_workspace import EvidentlyWorkspace, signal_values, workspace_dir
from monitoring.reports import Reports
from monitoring.status import DriftCheck
from monitoring.triggers import Signals
from training.data import held_out
from training.registry import Registry

log = logging.getLogger(__name__)
SERIES = TypeAdapter(list[SeriesPoint])


class Watch:
    def __init__(self, settings: Settings, task: Task, registry: Registry) -> None:
        self.settings = settings
        self.task = task
        self.registry = registry
        folder = settings.paths.state_dir / "monitor"
        self.reports = Reports(folder / "reports", settings.monitor.reports_keep)
        self._series_file = folder / "series.json"
        self.series: deque[SeriesPoint] = deque(maxlen=settings.monitor.series_points)
        self.series.extend(self._load_series())
        self.drift: DriftCheck | None = None  # the newest drift check, by kind
        self.versions: list[quality.VersionQuality] = []  # per version, last signal window
        self.columns = columns_for(settings, task, registry)  # what a drift check compares
        self._checks = 0
        self.workspace = EvidentlyWorkspace(
            workspace_dir(settings.paths.state_dir), task.name,
            keep_signals=settings.monitor.series_points, keep_reports=settings.monitor.reports_keep,
        )  # fmt: skip
        self._snapshots: list[Any] = []  # this check's Evidently snapshot, for the workspace

    def _load_series(self) -> list[SeriesPoint]:
        if not self._series_file.is_file():
            return []
        try:
            return SERIES.validate_json(self._series_file.read_bytes())
        except ValidationError as exc:
            log.warning("monitor: %s is not a series (%s); starting a new one",
                        self._series_file, exc.errors()[0]["msg"])  # fmt: skip
            return []

    def _recent(self, now: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(every label, labels on answers of the signal window, trusted or reliable ratings)."""
        labels = read_labels(self.settings.paths.store_dir)
        window = recent(labels, now - self.settings.monitor.signal_window_s, "predicted_at")
        feedback = read_kind(self.settings.paths.store_dir, "feedback")
        return labels, window, from_keys(feedback, rating_keys(self.settings))

    def measure_replies(self, new_labels: int, minutes_since_round: float) -> Signals:
        """A generate task's measurement: drift of the prompts (``PromptColumns``), the served
        replies' disagreement with the teacher's and the feedback, a series point."""
        now = time.time()
        since = now - self.settings.monitor.signal_window_s
        labels, window, feedback = self._recent(now)
        drift = self._drift(labels, now)
        summary = quality.feedback_summary(feedback, since, now, self.settings.train.bad_rating_max)
        labelled, disagreement = quality.reply_disagreement(window, self.registry.current())
        self._to_workspace(now, drift, disagreement)
        self._append(now, drift, disagreement, len(window), summary)
        return Signals(
            new_labels=new_labels, minutes_since_round=minutes_since_round,
            drift=None if drift is None else max(drift.values()),
            disagreement=disagreement, labelled=labelled,
            negative_share=summary.negative_share, rated=summary.rated,
        )  # fmt: skip

    def measure(self, new_labels: int, minutes_since_round: float) -> Signals:
        """One measurement: drift, quality, a series point; returns the triggers' signals."""
        now = time.time()
        cfg = self.settings.monitor
        labels, window, feedback = self._recent(now)
        drift = self._drift(labels, now)
        since = now - cfg.signal_window_s
        bad = self.settings.train.bad_rating_max
        versions = quality.per_version(window, recent(feedback, since), bad)
        self.versions = versions
        served = next((v for v in versions if v.version == self.registry.current()), None)
        summary = quality.feedback_summary(feedback, since, now, bad)
        disagreement = None if served is None else served.disagreement
        self._to_workspace(now, drift, disagreement)
        self._append(now, drift, disagreement, len(window), summary)
        return Signals(
            new_labels=new_labels,
            minutes_since_round=minutes_since_round,
            drift=None if drift is None else max(drift.values()),
            disagreement=disagreement,
            labelled=0 if served is None else served.labelled,
            negative_share=summary.negative_share,
            rated=summary.rated,
        )

    def _to_workspace(
        self, now: float, drift: dict[str, float] | None, disagreement: float | None
    ) -> None:
        """This check's signals (and its drift report, when it saved one) into the workspace."""
        report = self._snapshots.pop() if self._snapshots else None
        try:
            values = signal_values(drift, disagreement)
            self.workspace.add_check(now, self.registry.current(), values, report)
        except Exception:
            log.warning(
                "monitor: could not write the check to the Evidently workspace %s",
                self.workspace.folder, exc_info=True,
            )  # fmt: skip

    def _append(
        self,
        now: float,
        drift: dict[str, float] | None,
        disagreement: float | None,
        labelled: int,
        summary: quality.FeedbackSummary,
    ) -> None:
        """One point of the series, kept on disk (a restarted scheduler keeps its history)."""
        per_min = labelled / (self.settings.monitor.signal_window_s / 60)
        self.series.append(SeriesPoint(
            ts=now, disagreement=disagreement, drift=drift, labels_per_min=per_min,
            rated=summary.rated, feedback_per_min=summary.feedback_per_min,
            mean_rating=summary.mean_rating, negative_share=summary.negative_share,
        ))  # fmt: skip
        write_atomic(self._series_file, SERIES.dump_json(list(self.series)))

    def _drift(self, labels: pd.DataFrame, now: float) -> dict[str, float] | None:
        """Drift share per kind between the training window and traffic since; None without
        ``monitor.min_rows`` rows in each (the previous check's result is kept meanwhile)."""
        from monitoring.drift import drift_by_kind, pinned_methods

        self._snapshots.clear()
        cfg = self.settings.monitor
        current_version = self.registry.current()
        if labels.empty or current_version is None:
            return None
        reference, current = self._windows(labels, current_version)
        if min(len(reference), len(current)) < cfg.min_rows:
            return None
        frames = self.columns.frames(current_version, reference, current)
        html = self.reports.next_path(now) if self._checks % cfg.html_every == 0 else None
        self._checks += 1  # the first check saves its report, then every html_every-th
        num, cat, threshold = pinned_methods(
            cfg.method, cfg.threshold, min(len(reference), len(current))
        )
        results = drift_by_kind(
            *frames,
            num_method=num,
            cat_method=cat,
            threshold=threshold,
            html=html,
            on_snapshot=None if html is None else self._snapshots.append,
        )
        shares = {kind: r.drift_share for kind, r in results.items()}
        self.drift = DriftCheck(
            version=current_version, checked_at=now, share=shares,
            drifted={k: list(r.drifted_columns) for k, r in results.items()},
            reference_rows=len(reference), current_rows=len(current),
            method=next(iter(results.values())).method,
        )  # fmt: skip
        if html is not None:
            self.reports.add(
                html, shares, version=current_version,
                reference_rows=len(reference), current_rows=len(current),
            )  # fmt: skip
        return shares

    def _windows(self, labels: pd.DataFrame, version: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(reference, current): the held-out rows of ``version``'s training window and the
        traffic since. A version trained on no window (a generate task's base LM) stands in the
        first ``current_rows`` rows it was sent for one, so its reference is fixed once they
        came (the same size of window as the current one)."""
        cfg = self.settings.monitor
        since = self.registry.get(version).lineage.window_end_ts
        if since <= 0:
            first = labels.sort_values("ts", kind="stable").head(cfg.current_rows)
            since = float(first["ts"].max()) if len(first) < len(labels) else float("inf")
        held = held_out(labels, self.settings.train.holdout_fraction)
        reference = labels[(labels["ts"] <= since) & held].tail(cfg.reference_rows)
        return reference, labels[labels["ts"] > since].tail(cfg.current_rows)

    def dashboard(self) -> WatchView:
        return WatchView(
            series=list(self.series), versions=self.versions,
            reports=self.reports.listing(), drift=self.drift,
        )  # fmt: skip
