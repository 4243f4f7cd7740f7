"""The replay reservoir: Algorithm R keeps every offered row with probability capacity / seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training import replay


def _rows(first: int, n: int) -> pd.DataFrame:
    ids = range(first, first + n)
    return pd.DataFrame({"request_id": [f"r{i}" for i in ids], "ts": [float(i) for i in ids]})


def test_fills_up_to_capacity_then_stays_there() -> None:
    rng = np.random.default_rng(0)
    res = replay.offer(replay.empty(50), _rows(0, 30), rng)
    assert (len(res.rows), res.seen) == (30, 30)
    res = replay.offer(res, _rows(30, 500), rng)
    assert (len(res.rows), res.seen) == (50, 530)
    assert res.rows["request_id"].is_unique


def test_every_offered_row_is_kept_with_equal_probability() -> None:
    counts = np.zeros(1_000)
    trials = 200
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        res = replay.empty(100)
        for first in range(0, 1_000, 250):  # offered over four rounds, as a service would
            res = replay.offer(res, _rows(first, 250), rng)
        counts[res.rows["ts"].astype(int).to_numpy()] += 1
    share = counts / trials  # expected 100 / 1000 = 0.1 for every row
    early, late = share[:250].mean(), share[750:].mean()
    assert abs(early - 0.1) < 0.015 and abs(late - 0.1) < 0.015
    assert share.std() < 0.03


def test_advance_offers_only_rows_newer_than_the_horizon() -> None:
    rng = np.random.default_rng(0)
    rows = _rows(0, 100)
    res = replay.advance(replay.empty(1_000), rows, until_ts=49.0, rng=rng)
    assert (res.seen, res.horizon_ts) == (50, 49.0)
    res = replay.advance(res, rows, until_ts=49.0, rng=rng)  # nothing new
    assert res.seen == 50
    res = replay.advance(res, rows, until_ts=99.0, rng=rng)
    assert res.seen == 100 and sorted(res.rows["ts"]) == [float(i) for i in range(100)]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    res = replay.offer(replay.empty(10), _rows(0, 25), np.random.default_rng(1))
    replay.save(res, tmp_path / "replay")
    back = replay.load(tmp_path / "replay", 10)
    assert (back.seen, back.horizon_ts, back.capacity) == (25, 24.0, 10)
    assert back.rows["request_id"].tolist() == res.rows["request_id"].tolist()
    assert len(replay.load(tmp_path / "replay", 4).rows) == 4  # a smaller capacity subsamples
    fresh = replay.load(tmp_path / "nothing", 7)
    assert (fresh.seen, len(fresh.rows), fresh.capacity) == (0, 0, 7)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be ≥ 1, got 0"):
        replay.empty(0)
