"""Per-replica rollout counters (``VariantStats``) and how the scheduler adds them (``merge``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from distillery.contracts import Evidence
from services.variants import LATENCY_SAMPLES, VariantStats, merge


def _json(stats: VariantStats) -> dict[str, Any]:
    """A snapshot as it crosses to the scheduler, in JSON form (version keys as strings)."""
    return stats.snapshot().model_dump(mode="json")


def test_record_is_ignored_while_no_rollout_runs() -> None:
    stats = VariantStats()
    stats.record(1, 5.0)
    stats.record(2, 5.0, error=True)
    assert _json(stats)["versions"] == {}
    stats.start("r1:shadow")
    stats.record(1, 5.0)
    assert _json(stats)["versions"] == {"1": {"requests": 1, "errors": 0, "latencies_ms": [5.0]}}


def test_errors_count_as_requests_without_a_latency() -> None:
    stats = VariantStats()
    stats.start("k")
    stats.record(3, 7.0)
    stats.record(3, 99.0, error=True)
    assert _json(stats)["versions"]["3"] == {
        "requests": 2,
        "errors": 1,
        "latencies_ms": [7.0],
    }


def test_start_resets_only_when_the_key_changes() -> None:
    stats = VariantStats()
    stats.start("r1:shadow")
    stats.record(1, 4.0)
    stats.compare(agreed=True)
    stats.start("r1:shadow")  # a repeated start keeps the counts
    snap = _json(stats)
    assert (snap["key"], snap["versions"]["1"]["requests"], snap["compared"]) == ("r1:shadow", 1, 1)
    stats.start("r1:canary")
    snap = _json(stats)
    assert snap == {"key": "r1:canary", "versions": {}, "compared": 0, "agreed": 0}
    stats.record(1, 4.0)
    stats.start(None)  # the rollout ended: counts go and recording stops
    stats.record(1, 4.0)
    assert _json(stats) == {"key": None, "versions": {}, "compared": 0, "agreed": 0}


def test_latencies_keep_only_the_newest_samples() -> None:
    stats = VariantStats()
    stats.start("k")
    for i in range(LATENCY_SAMPLES + 5):
        stats.record(1, float(i))
    counts = _json(stats)["versions"]["1"]
    assert counts["requests"] == LATENCY_SAMPLES + 5
    assert len(counts["latencies_ms"]) == LATENCY_SAMPLES
    assert counts["latencies_ms"][0] == 5.0


def _replica(key: str, latencies: dict[int, list[float]], errors: int = 0) -> VariantStats:
    stats = VariantStats()
    stats.start(key)
    for version, values in latencies.items():
        for ms in values:
            stats.record(version, ms)
        for _ in range(errors):
            stats.record(version, 0.0, error=True)
    return stats


def test_merge_adds_replicas_and_takes_p99_over_the_union() -> None:
    rng = np.random.default_rng(0)
    a_lat = {1: list(rng.uniform(1, 10, 300)), 2: list(rng.uniform(1, 10, 50))}
    b_lat = {1: list(rng.uniform(50, 100, 20)), 2: list(rng.uniform(1, 10, 70))}
    a = _replica("r1:shadow", a_lat, errors=2)
    b = _replica("r1:shadow", b_lat, errors=1)
    for agreed in (True, True, False):
        a.compare(agreed)
    b.compare(True)
    merged = merge([a.snapshot(), b.snapshot()], "r1:shadow")
    assert set(merged.evidence) == {1, 2}
    for v in (1, 2):
        union = a_lat[v] + b_lat[v]
        got = merged.evidence[v]
        assert (got.requests, got.errors) == (len(union) + 3, 3)
        assert got.p99_ms == pytest.approx(float(np.percentile(union, 99)))
        assert (got.labelled, got.rated) == (0, 0)
    # the slow replica's tail shows up in the merged p99, not an average of p99s
    alone = float(np.percentile(a_lat[1], 99))
    assert merged.evidence[1].p99_ms is not None
    assert merged.evidence[1].p99_ms > alone + 10
    assert (merged.compared, merged.agreed) == (4, 3)


def test_merge_ignores_snapshots_of_another_key() -> None:
    now = _replica("r1:canary", {1: [1.0, 2.0]})
    now.compare(True)
    stale = _replica("r1:shadow", {1: [500.0] * 10, 2: [500.0]})
    stale.compare(False)
    idle = VariantStats().snapshot()  # key None
    merged = merge([stale.snapshot(), now.snapshot(), idle], "r1:canary")
    assert set(merged.evidence) == {1}
    assert merged.evidence[1].requests == 2
    assert merged.evidence[1].p99_ms == pytest.approx(float(np.percentile([1.0, 2.0], 99)))
    assert (merged.compared, merged.agreed) == (1, 1)
    assert merge([stale.snapshot()], "r1:canary").evidence == {}


def test_merge_of_a_version_with_only_errors_has_no_p99() -> None:
    only_errors = _replica("k", {4: []}, errors=3)
    snap = only_errors.snapshot()
    merged = merge([snap], "k")
    assert merged.evidence == {4: Evidence(requests=3, errors=3, p99_ms=None)}
    assert merge([snap, snap], "other").evidence == {}
