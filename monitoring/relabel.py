"""Relabel what another teacher labelled (``DISTILLERY_TEACHER_OLD_LABELS=relabel``), within the
budget: every scheduler tick sends at most ``RELABEL_SHARE`` of the sampler's budget (labels per
minute × the minutes since the last send, at most one minute's worth) of the newest rows whose
teacher is not the current one back to the sampled topic, as ``relabel:<request id>`` with reason
``relabel``. The labeler labels them like any sample (exactly once, cache, breaker); rounds then
read the new label in place of the old (``feedback.examples.supersede_relabelled``)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from distillery import bus
from distillery.events import SampledPrediction, Topics
from distillery.settings import Settings
from feedback.examples import RELABEL_PREFIX, read_labels

log = logging.getLogger(__name__)
RELABEL_SHARE = 0.25  # of the sampler's labels per minute: live traffic keeps the rest


def to_relabel(labels: pd.DataFrame, current: str, limit: int, sent: set[str]) -> pd.DataFrame:
    """Up to ``limit`` rows, newest first, labelled by a teacher other than ``current``, that
    are not relabels themselves, have none yet, and were not sent already."""
    if labels.empty or limit <= 0:
        return labels.iloc[:0]
    ids = labels["request_id"].astype(str)
    teacher = labels["teacher_id"].fillna("unknown") if "teacher_id" in labels else "unknown"
    done = {rid[len(RELABEL_PREFIX) :] for rid in ids if rid.startswith(RELABEL_PREFIX)}
    old = (teacher != current) & ~ids.str.startswith(RELABEL_PREFIX)
    old &= ~ids.isin(done) & ~ids.isin(sent)
    return labels[old].sort_values("ts", ascending=False).drop_duplicates("request_id").head(limit)


class Relabeler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent: set[str] = set()
        self._last = time.monotonic()
        self._producer: Any = None

    def tick(self, current: str | None) -> int:
        """Send this tick's allowance; returns how many were sent."""
        cfg = self.settings.teacher
        now = time.monotonic()
        minutes = min(1.0, (now - self._last) / 60)
        if cfg.old_labels != "relabel" or current is None:
            self._last = now
            return 0
        allowance = int(RELABEL_SHARE * cfg.labels_per_min() * minutes)
        if allowance < 1:
            return 0
        self._last = now
        rows = to_relabel(read_labels(self.settings.paths.store_dir), current, allowance, self.sent)
        if rows.empty:
            return 0
        if self._producer is None:
            self._producer = bus.make_producer(self.settings.kafka)
        for row in rows.itertuples():
            event = SampledPrediction(
                request_id=f"{RELABEL_PREFIX}{row.request_id}",
                text=str(row.text),
                student_probs=[float(x) for x in row.student_probs],
                model_version=int(row.model_version),
                reason="relabel",
            )
            bus.send(self._producer, Topics.SAMPLED, event, event.request_id)
        self._producer.flush(timeout=self.settings.kafka.send_timeout_s)
        self.sent.update(str(rid) for rid in rows["request_id"])
        log.info("relabel: sent %d rows of other teachers to %s", len(rows), current)
        return len(rows)
