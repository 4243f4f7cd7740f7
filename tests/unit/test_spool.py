"""The feedback spool: fsync'd appends, in-order replay of only what the broker acknowledged,
truncation, torn lines, one owner per file, and adoption of a dead owner's spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedback.spool import Entry, Spool, adopt_orphans


class Broker:
    """Acknowledges the first ``accept`` entries it is sent, then refuses."""

    def __init__(self, accept: int = 10**9) -> None:
        self.accept = accept
        self.got: list[tuple[str, str, bytes]] = []

    def __call__(self, entries: list[Entry]) -> int:
        n = min(len(entries), self.accept - len(self.got))
        self.got += [(e.topic, e.key, e.value) for e in entries[: max(n, 0)]]
        return max(n, 0)


def _fill(spool: Spool, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        spool.append("feedback", f"req-{i}", f'{{"i": {i}}}'.encode())


def test_replay_sends_everything_in_order_then_truncates(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 5)
    assert spool.pending() > 0
    broker = Broker()
    assert spool.replay(broker) == 5
    assert [key for _, key, _ in broker.got] == [f"req-{i}" for i in range(5)]
    assert broker.got[2][2] == b'{"i": 2}'
    assert spool.pending() == 0 and spool.path.stat().st_size == 0


def test_only_acknowledged_entries_leave_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 6)
    broker = Broker(accept=4)
    assert spool.replay(broker, batch=3) == 4
    assert [e.key for e in spool.entries()] == ["req-4", "req-5"]
    broker.accept = 100
    assert spool.replay(broker) == 2
    assert [key for _, key, _ in broker.got] == [f"req-{i}" for i in range(6)]  # none twice


def test_appends_after_a_partial_replay_keep_their_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 3)
    spool.replay(Broker(accept=1))
    _fill(spool, 2, start=3)
    assert [e.key for e in spool.entries()] == ["req-1", "req-2", "req-3", "req-4"]


def test_a_reopened_spool_resumes_after_the_acknowledged_mark(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 4)
    spool.replay(Broker(accept=3))
    spool.close()  # the owner dies
    again = Spool(tmp_path, "a")
    assert [e.key for e in again.entries()] == ["req-3"]


def test_a_torn_last_line_is_not_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 2)
    spool.close()
    with open(tmp_path / "a.spool", "ab") as out:
        out.write(b'{"topic": "feedback", "key": "req-2", "val')  # a crash mid-write
    assert [e.key for e in Spool(tmp_path, "a").entries()] == ["req-0", "req-1"]


def test_a_mark_past_the_end_means_the_file_was_truncated(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 2)
    spool.close()
    (tmp_path / "a.acked").write_text("999999")  # crash between truncate and the mark's reset
    assert len(Spool(tmp_path, "a").entries()) == 2


def test_one_owner_per_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "a")
    with pytest.raises(BlockingIOError):
        Spool(tmp_path, "a")
    spool.close()
    Spool(tmp_path, "a").close()


def test_orphans_are_adopted_replayed_and_deleted(tmp_path: Path) -> None:
    dead = Spool(tmp_path, "dead")
    _fill(dead, 3)
    dead.close()
    alive = Spool(tmp_path, "alive")
    _fill(alive, 2, start=10)
    broker = Broker()
    assert adopt_orphans(tmp_path, broker) == 3
    assert [key for _, key, _ in broker.got] == ["req-0", "req-1", "req-2"]
    assert not (tmp_path / "dead.spool").exists()
    assert (tmp_path / "alive.spool").exists() and alive.pending() > 0  # a live owner's: left


def test_an_orphan_the_broker_refuses_stays_for_later(tmp_path: Path) -> None:
    dead = Spool(tmp_path, "dead")
    _fill(dead, 3)
    dead.close()
    assert adopt_orphans(tmp_path, Broker(accept=1)) == 1
    assert (tmp_path / "dead.spool").exists()
    broker = Broker()
    assert adopt_orphans(tmp_path, broker) == 2
    assert [key for _, key, _ in broker.got] == ["req-1", "req-2"]
