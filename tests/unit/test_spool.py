"""The feedback spool: fsync'd appends, in-order replay of only what the broker acknowledged,
truncation, torn and unreadable lines (cut or quarantined, never a jam), one owner per file, and
adoption of a dead owner's spool."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from feedback import spool as spool_module
from feedback.spool import Entry, Spool, adopt_orphans, quarantined


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


def _quarantine(tmp_path: Path, name: str = "a") -> list[dict[str, str]]:
    path = tmp_path / f"{name}.quarantine"
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_a_torn_tail_then_an_append_then_a_restart_replays_every_acknowledged_event_once(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 2)  # acknowledged to their clients (fsync'd)
    spool.close()
    torn = b'{"topic": "feedback", "key": "req-2", "val'  # a crash mid-append: never a 202
    with open(tmp_path / "a.spool", "ab") as out:
        out.write(torn)
    again = Spool(tmp_path, "a")  # the restarted owner cuts it off and says so
    _fill(again, 2, start=3)  # before the fix this glued onto the torn bytes: entries() raised
    again.close()
    broker = Broker()
    third = Spool(tmp_path, "a")
    assert third.replay(broker) == 4
    assert [key for _, key, _ in broker.got] == ["req-0", "req-1", "req-3", "req-4"]
    assert third.pending() == 0 and third.replay(broker) == 0  # exactly once
    (record,) = _quarantine(tmp_path)
    assert record["reason"] == "torn" and base64.b64decode(record["raw"]) == torn
    assert quarantined(tmp_path) == 1


def test_a_failed_append_is_cut_off_so_the_next_one_starts_a_fresh_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 1)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        spool.append("feedback", "req-1", b"lost")  # the API answers 503, not 202
    monkeypatch.setattr(spool_module.os, "fsync", real_fsync)
    _fill(spool, 1, start=2)
    assert [e.key for e in spool.entries()] == ["req-0", "req-2"]  # req-1 was answered 503


def test_an_unreadable_line_is_quarantined_in_order_and_never_jams_the_spool(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, "a")
    _fill(spool, 1)
    with open(tmp_path / "a.spool", "ab") as out:
        out.write(b"\x00not json\n")  # a whole line that does not decode (bit rot, a bad disk)
    _fill(spool, 1, start=1)
    with open(tmp_path / "a.spool", "ab") as out:
        out.write(b'{"topic": "feedback"}\n')  # and one with a field missing, last
    broker = Broker()
    assert [e.key for e in spool.entries()] == ["req-0"]  # it stops before the bad line
    assert spool.replay(broker) == 2
    assert [key for _, key, _ in broker.got] == ["req-0", "req-1"]
    assert spool.pending() == 0 and spool.path.stat().st_size == 0
    assert [r["reason"] for r in _quarantine(tmp_path)] == ["unreadable", "unreadable"]
    assert base64.b64decode(_quarantine(tmp_path)[0]["raw"]) == b"\x00not json\n"


def test_a_new_spool_file_fsyncs_its_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(spool_module, "fsync_dir", synced.append)
    Spool(tmp_path, "a").close()
    assert synced == [tmp_path]
    Spool(tmp_path, "a").close()  # it exists: nothing new to make durable
    assert synced == [tmp_path]
