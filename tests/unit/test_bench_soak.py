"""bench.soak's summary: the slope over the whole run, and over the samples after the replicas'
join cache has filled (it grows for ``join_window_s`` by design)."""

from __future__ import annotations

from bench.soak import summarise


def test_growth_that_stops_once_the_cache_is_full_reads_flat_after_it() -> None:
    # 20 MB an hour for the first 10 minutes (the fill), then flat for 20 more
    samples = [
        {"ts": t, "memory_mb": {"replica": 100 + 20 * min(t, 600) / 3600}, "lag_s": 0.5}
        for t in range(0, 1800, 60)
    ]
    rows = summarise(samples, settled_s=660)
    replica = next(r for r in rows if r[0] == "replica")
    assert float(replica[3]) > 2.0  # the whole run's slope sees the fill
    assert replica[4] == "+0.0"  # after it: flat
    assert rows[-1][0] == "labeler lag (s)" and rows[-1][4] == "—"
    short = summarise(samples[:5], settled_s=660)
    assert short[0][4] == "—"  # ended before the cache filled
