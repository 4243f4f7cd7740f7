"""A durable local spool for events the broker has not acknowledged: feedback is never dropped.

The spool is an append-only JSON-lines file, fsync'd before the API answers 202, plus an
``.acked`` file holding how many bytes of it the broker has acknowledged (replaced atomically).
Replay sends the unacknowledged lines in order and moves the mark only past what the broker
acknowledged; once everything is acknowledged the file is truncated. A crash between the broker's
ack and the mark's move replays that line once more: delivery is at-least-once, and readers
dedupe by request id.

Each owner (a Serve replica) holds an exclusive ``flock`` on its own file for its whole life.
A file nobody holds belongs to a dead owner: any live owner adopts it, replays it and deletes it.
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

from distillery.files import write_atomic

log = logging.getLogger(__name__)
SUFFIX = ".spool"


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
        self._lock = threading.Lock()
        self._file = open(self.path, "a+b")  # noqa: SIM115 (held for the owner's life)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise
        self._acked = self._read_mark()

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
        """Write one event and fsync it: after this returns, a crash does not lose it."""
        line = json.dumps({"topic": topic, "key": key, "value": base64.b64encode(value).decode()})
        with self._lock:
            self._file.seek(0, os.SEEK_END)
            self._file.write(line.encode() + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def pending(self) -> int:
        """Bytes written but not acknowledged (0: nothing to replay)."""
        with self._lock:
            return self._size() - self._acked

    def entries(self, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` unacknowledged entries, oldest first; a torn last line is skipped."""
        with self._lock:
            self._file.seek(self._acked)
            out: list[Entry] = []
            position = self._acked
            for raw in self._file:
                if not raw.endswith(b"\n") or len(out) >= limit:
                    break  # a line a crash cut short was never acknowledged to anyone
                position += len(raw)
                body = json.loads(raw)
                out.append(
                    Entry(body["topic"], body["key"], base64.b64decode(body["value"]), position)
                )
            return out

    def ack(self, entry: Entry) -> None:
        """The broker acknowledged everything up to and including ``entry``."""
        with self._lock:
            if entry.end >= self._size():
                self._file.truncate(0)  # first: a crash now leaves a mark past the end → 0
                self._file.flush()
                os.fsync(self._file.fileno())
                self._write_mark(0)
            else:
                self._write_mark(entry.end)

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
