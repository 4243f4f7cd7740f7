"""feedback.store.compact: the store's small Parquet shards merged into one, with every read
unchanged (rows, their order, and which rows were "written after" a time)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from feedback import store
from feedback.examples import STORED_AT, read_kind, shard_ns
from feedback.store import compact, write_shard


def _rows(i: int, n: int = 3) -> list[dict[str, object]]:
    return [{"request_id": f"r{i}-{j}", "ts": float(i), "rating": j} for j in range(n)]


def _shards(folder: Path, count: int) -> list[float]:
    """``count`` shards; the time just after each was written."""
    after = []
    for i in range(count):
        write_shard(folder, "feedback", _rows(i))
        time.sleep(0.002)
        after.append(time.time())
    return after


def test_a_run_of_small_shards_becomes_one_and_every_read_is_the_same(tmp_path: Path) -> None:
    marks = _shards(tmp_path, 40)
    before = read_kind(tmp_path, "feedback")
    since = read_kind(tmp_path, "feedback", written_after=marks[24])
    newest = max(tmp_path.glob("feedback-*.parquet"))
    assert compact(tmp_path, "feedback", min_shards=32, before_ns=time.time_ns()) == 40
    assert sorted(tmp_path.glob("feedback-*.parquet")) == [newest]  # it takes the newest name
    pd.testing.assert_frame_equal(read_kind(tmp_path, "feedback"), before)
    pd.testing.assert_frame_equal(read_kind(tmp_path, "feedback", written_after=marks[24]), since)
    assert list(since["ts"].unique()) == [float(i) for i in range(25, 40)]
    assert list(read_kind(tmp_path, "feedback", ["request_id"]).columns) == ["request_id"]


def test_too_few_or_too_new_shards_are_left_alone(tmp_path: Path) -> None:
    _shards(tmp_path, 10)
    assert compact(tmp_path, "feedback", min_shards=32, before_ns=time.time_ns()) == 0
    assert compact(tmp_path, "feedback", min_shards=2, before_ns=0) == 0  # none old enough
    assert len(list(tmp_path.glob("feedback-*.parquet"))) == 10


def test_a_large_shard_ends_the_run_so_order_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _shards(tmp_path, 4)
    write_shard(tmp_path, "feedback", _rows(100, n=400))  # large: above the bound set below
    time.sleep(0.002)
    _shards(tmp_path, 3)
    large = sorted(tmp_path.glob("feedback-*.parquet"))[4]
    monkeypatch.setattr(store, "COMPACT_BYTES", large.stat().st_size)
    before = read_kind(tmp_path, "feedback")
    assert compact(tmp_path, "feedback", min_shards=3, before_ns=time.time_ns()) == 3
    names = sorted(tmp_path.glob("feedback-*.parquet"))
    assert len(names) == 4 + 1 + 1 and large in names  # the 4 before it are not merged across it
    pd.testing.assert_frame_equal(read_kind(tmp_path, "feedback"), before)


def test_a_shard_from_before_stamping_takes_its_file_time(tmp_path: Path) -> None:
    legacy = tmp_path / f"feedback-{time.time_ns():020d}.parquet"
    pd.DataFrame(_rows(0)).to_parquet(legacy, index=False)
    time.sleep(0.002)
    _shards(tmp_path, 2)
    assert compact(tmp_path, "feedback", min_shards=3, before_ns=time.time_ns()) == 3
    merged = read_kind(tmp_path, "feedback")
    assert merged[STORED_AT].iloc[0] == pytest.approx(shard_ns(legacy) / 1e9)
    assert merged[STORED_AT].notna().all()


def test_a_shard_merged_away_while_listed_makes_the_read_list_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _shards(tmp_path, 3)
    real = pd.read_parquet
    calls = {"n": 0}

    def vanishing(path: Path, **kwargs: object) -> pd.DataFrame:
        calls["n"] += 1
        if calls["n"] == 1:
            raise FileNotFoundError(path)
        return real(path, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", vanishing)
    assert len(read_kind(tmp_path, "feedback")) == 9
