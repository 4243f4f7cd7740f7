"""What one replica saw of each student version during a rollout: requests, errors, model
latencies and shadow agreement. Replicas send ``snapshot`` to the scheduler every few seconds;
``merge`` adds the replicas up into ``distillery.contracts.Evidence``.

A snapshot is the whole count since the rollout (or its stage) began, not a delta, so a lost or
repeated report changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from distillery.actors import find_scheduler
from distillery.contracts import Evidence, VariantReport, VersionCounts

LATENCY_SAMPLES = 2_000  # per version per replica: the newest, enough for a p99


@dataclass
class _Counts:
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


class VariantStats:
    """Thread-safe counters, reset whenever the rollout stage changes (``start``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.key: str | None = None  # "{rollout id}:{stage}" these counts belong to
        self._counts: dict[int, _Counts] = {}
        self._compared = 0
        self._agreed = 0

    def start(self, key: str | None) -> None:
        with self._lock:
            if key != self.key:
                self.key, self._counts, self._compared, self._agreed = key, {}, 0, 0

    def record(self, version: int, latency_ms: float, error: bool = False) -> None:
        """One text answered (or failed) by ``version``; ignored while no rollout runs."""
        with self._lock:
            if self.key is None:
                return
            counts = self._counts.setdefault(version, _Counts())
            counts.requests += 1
            counts.errors += int(error)
            if not error:
                counts.latencies_ms.append(latency_ms)

    def compare(self, agreed: bool) -> None:
        """A mirrored text: did the shadow's top label match the stable student's?"""
        with self._lock:
            self._compared += 1
            self._agreed += int(agreed)

    def snapshot(self) -> VariantReport:
        with self._lock:
            return VariantReport(
                key=self.key,
                versions={
                    v: VersionCounts(
                        requests=c.requests, errors=c.errors, latencies_ms=list(c.latencies_ms)
                    )
                    for v, c in self._counts.items()
                },
                compared=self._compared,
                agreed=self._agreed,
            )


@dataclass(frozen=True)
class Merged:
    evidence: dict[int, Evidence]  # version → requests, errors, p99 (store evidence added later)
    compared: int  # mirrored texts, all replicas
    agreed: int  # ... where the shadow agreed with the stable student


def merge(reports: list[VariantReport], key: str) -> Merged:
    """Add up the replicas' reports that belong to ``key``; others are stale and ignored."""
    requests: dict[int, int] = {}
    errors: dict[int, int] = {}
    latencies: dict[int, list[float]] = {}
    compared = agreed = 0
    for report in reports:
        if report.key != key:
            continue
        compared += report.compared
        agreed += report.agreed
        for version, counts in report.versions.items():
            requests[version] = requests.get(version, 0) + counts.requests
            errors[version] = errors.get(version, 0) + counts.errors
            latencies.setdefault(version, []).extend(counts.latencies_ms)
    evidence = {
        v: Evidence(
            requests=requests[v],
            errors=errors[v],
            p99_ms=float(np.percentile(latencies[v], 99)) if latencies.get(v) else None,
        )
        for v in requests
    }
    return Merged(evidence, compared, agreed)


def report_forever(stats: VariantStats, replica_id: str, period_s: float) -> None:
    """A replica's thread: every ``period_s`` during a rollout, send ``stats.snapshot()`` to the
    scheduler actor (fire and forget; a lost report costs nothing, the next one has it all)."""
    scheduler = None
    while True:
        time.sleep(period_s)
        snapshot = stats.snapshot()
        if snapshot.key is None:
            continue
        try:
            scheduler = scheduler or find_scheduler()
            if scheduler is not None:
                scheduler.report_variants.remote(replica_id, snapshot)
        except Exception:
            scheduler = None
