"""A durable local spool for events the broker has not acknowledged: feedback is never dropped.

The spool is an append-only JSON-lines file, fsync'd before the API answers 202, plus an
``.acked`` file holding how many bytes of it the broker has acknowledged (replaced atomically).
Replay sends the unacknowledged lines in order and moves the mark only past what the broker
acknowledged; once everything is acknowledged the file is truncated. A crash between the broker's
ack and the mark's move replays that line once more: delivery is at-least-once, and readers
dedupe by request id.

Each owner (a Serve replica) holds an exclusive ``flock`` on its own file for its whole life.
A file nobody holds belongs to a dead owner: any live owner adopts it, replays it and deletes it.

A damaged spool never jams. A torn last line (a crash mid-append: that event was never answered
202) is cut off when the file is opened, and an append that fails (a full disk: the client gets
503) is cut back at once, so the next append starts on a fresh line. Before, the next append
glued itself to the torn bytes and ``entries`` raised on that line from then on, while
``/v1/feedback`` kept answering 202. A whole line that does not decode is moved past in order.
Torn tails and unreadable lines go, raw, to ``<name>.quarantine`` (fsync'd before the mark
moves) and are logged; ``quarantined`` counts the records in a folder's quarantine files (each
replica exports it as ``distillery_spool_quarantined_records``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distillery.files import fsync_dir, write_atomic

log = logging.getLogger(__name__)
SUFFIX = ".spool"
QUARANTINE = ".quarantine"


@dataclass(frozen=True)
class Entry:
    topic: str
    key: str
    value: bytes
    end: int  # byte offset just past this entry's line


Send = Callable[[list[Entry]], int]  # sends in order; returns how many the broker acknowledged


class Spool:
    """One owner's spool file. Thread-safe; raises ``BlockingIOError`` if another owner holds it."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}{SUFFIX}"
        self._mark_path = self.path.with_suffix(".acked")
        self._quarantine_path = self.path.with_suffix(QUARANTINE)
        self._lock = threading.Lock()
        existed = self.path.exists()
        self._file = open(self.path, "a+b")  # noqa: SIM115 (held for the owner's life)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise
        if not existed:
            fsync_dir(directory)  # the file's name survives a power cut, not only its bytes
        self._acked = self._read_mark()
        with self._lock:
            self._cut_torn_tail()

    def _read_mark(self) -> int:
        try:
            mark = int(self._mark_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            mark = 0
        return mark if 0 <= mark <= self._size() else 0  # a file truncated after a crash

    def _size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def _write_mark(self, mark: int) -> None:
        write_atomic(self._mark_path, str(mark).encode(), sync_dir=True)
        self._acked = mark

    def append(self, topic: str, key: str, value: bytes) -> None:
        """Write one event and fsync it: after this returns, a crash does not lose it. If the
        write fails (a full disk), the part written is cut off again and the error raised."""
        line = json.dumps({"topic": topic, "key": key, "value": base64.b64encode(value).decode()})
        with self._lock:
            before = self._size()
            try:
                self._file.write(line.encode() + b"\n")
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError:
                self._cut_back(before)  # the client is told 503: nothing of it may stay
                raise

    def _cut_back(self, size: int) -> None:
        with contextlib.suppress(OSError):  # the disk is failing: the next open cuts a tail
            self._file.truncate(size)
            self._file.flush()
            os.fsync(self._file.fileno())
        log.warning("spool %s: an append failed and was cut back to %d bytes", self.path.name, size)

    def _cut_torn_tail(self) -> None:
        """Cut bytes after the last newline (a line no one was told was stored), quarantined."""
        size = self._size()
        if size == self._acked:
            return
        self._file.seek(self._acked)
        unacked = self._file.read(size - self._acked)
        if unacked.endswith(b"\n"):
            return
        keep = self._acked + unacked.rfind(b"\n") + 1  # rfind -1 → the mark itself
        self._quarantine(unacked[keep - self._acked :], "torn")
        self._file.truncate(keep)
        self._file.flush()
        os.fsync(self._file.fileno())
        log.warning("spool %s: cut a torn last line of %d bytes", self.path.name, size - keep)

    def _quarantine(self, raw: bytes, reason: str) -> None:
        record = {"reason": reason, "spool": self.path.name, "raw": base64.b64encode(raw).decode()}
        with open(self._quarantine_path, "ab") as out:
            out.write(json.dumps(record).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())

    def pending(self) -> int:
        """Bytes written but not acknowledged (0: nothing to replay)."""
        with self._lock:
            return self._size() - self._acked

    def entries(self, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` unacknowledged entries, oldest first. A torn last line is skipped; an
        unreadable line first in line is quarantined and the mark moved past it, one later on
        ends the list (it is first in line next time)."""
        with self._lock:
            out: list[Entry] = []
            position = self._acked
            self._file.seek(position)
            for raw in self._file:
                if not raw.endswith(b"\n") or len(out) >= limit:
                    break  # a line a crash cut short was never acknowledged to anyone
                position += len(raw)
                entry = _decode(raw, position)
                if entry is not None:
                    out.append(entry)
                    continue
                if out:
                    break
                self._quarantine(raw, "unreadable")
                log.warning("spool %s: quarantined an unreadable line", self.path.name)
                self._advance(position)
                self._file.seek(position)
            return out

    def ack(self, entry: Entry) -> None:
        """The broker acknowledged everything up to and including ``entry``."""
        with self._lock:
            self._advance(entry.end)

    def _advance(self, end: int) -> None:
        """Move the mark to ``end``; at the end of the file, empty it."""
        if end >= self._size():
            self._file.truncate(0)  # first: a crash now leaves a mark past the end → 0
            self._file.flush()
            os.fsync(self._file.fileno())
            self._write_mark(0)
        else:
            self._write_mark(end)

    def replay(self, send: Send, batch: int = 500) -> int:
        """Send what is pending, in order, until done or the broker stops acknowledging;
        returns how many entries were acknowledged."""
        done = 0
        while entries := self.entries(batch):
            acked = send(entries)
            if acked:
                self.ack(entries[acked - 1])
                done += acked
            if acked < len(entries):
                break
        return done

    def close(self) -> None:
        with self._lock:
            self._file.close()  # releases the flock


def _decode(raw: bytes, end: int) -> Entry | None:
    """One spooled line as an entry ending at byte ``end``; None if it does not decode."""
    try:
        body = json.loads(raw)
        return Entry(str(body["topic"]), str(body["key"]), base64.b64decode(body["value"]), end)
    except (ValueError, KeyError, TypeError):  # JSONDecodeError and binascii.Error are ValueErrors
        return None


def quarantined(directory: Path) -> int:
    """Records in the quarantine files of ``directory`` (the spools of every owner there)."""
    total = 0
    for path in directory.glob(f"*{QUARANTINE}"):
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as records:
            total += sum(1 for _ in records)
    return total


def adopt_orphans(directory: Path, send: Send) -> int:
    """Replay and delete every spool in ``directory`` that no live owner holds."""
    done = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            spool = Spool(directory, path.name.removesuffix(SUFFIX))
        except BlockingIOError:
            continue  # a live owner's
        try:
            done += spool.replay(send)
            if spool.pending() == 0:
                path.unlink(missing_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    spool._mark_path.unlink()
                log.info("adopted and emptied the orphaned spool %s", path.name)
        finally:
            spool.close()
    return done
