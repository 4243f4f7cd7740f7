"""The example store: teacher labels and feedback from Kafka, kept as Parquet shards on disk.

One shard per flush, written atomically (temporary file, fsync, rename), then the offsets are
committed. Readers dedupe by request id, so a replayed batch never counts twice. Each row keeps its
topic, partition and offset: the lineage a model version points to.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from distillery import bus
from distillery.events import DecodeError, FeedbackEvent, TeacherLabel, Topics, decode
from distillery.files import write_frame
from distillery.settings import Settings
from feedback.examples import STORED_AT, shard_ns

log = logging.getLogger(__name__)
GROUP = "distillery-store"
KINDS = {Topics.LABELS: "labels", Topics.FEEDBACK: "feedback"}
COMPACT_BYTES = 8 << 20  # a merged shard this large is left alone: no history is rewritten twice


def write_shard(store_dir: Path, kind: str, rows: list[dict[str, Any]]) -> Path:
    """Write rows as one new Parquet shard named ``{kind}-{ns}.parquet``, each row stamped with
    its write time (``stored_at``, Unix s: what ``read_kind``'s ``written_after`` compares once
    shards are merged); returns its path."""
    now = time.time_ns()
    path = store_dir / f"{kind}-{now:020d}.parquet"
    write_frame(path, pd.DataFrame(rows).assign(**{STORED_AT: now / 1e9}))
    return path


def compact(store_dir: Path, kind: str, min_shards: int, before_ns: int) -> int:
    """Merge the run of small shards (under ``COMPACT_BYTES``) of ``kind`` written before
    ``before_ns``, after the last large one, into one, once there are ``min_shards`` of them;
    returns how many were merged (0: none).

    The store writes a shard per flush (every 2 s under steady traffic): an hour at 10 texts/s
    left 1,615 label shards, which ``read_kind`` read in 4.0 s against 0.06 s for the same rows
    in one file (``bench.soak``; every drift check and round reads them all). The merged shard
    takes the newest input's name, so the order of shards stays the order of writes; it replaces
    that file atomically before the others are removed (a crash between leaves duplicate rows,
    which every reader dedupes by request id and key). Rows keep their own ``stored_at``."""
    shards = sorted(store_dir.glob(f"{kind}-*.parquet"))
    run: list[Path] = []
    for shard in shards:
        if shard_ns(shard) >= before_ns:
            break
        run = [] if shard.stat().st_size >= COMPACT_BYTES else [*run, shard]
    if len(run) < min_shards:
        return 0
    frames = [_stamped(pd.read_parquet(s), shard_ns(s)) for s in run]
    write_frame(run[-1], pd.concat(frames, ignore_index=True))
    for shard in run[:-1]:
        shard.unlink(missing_ok=True)
    return len(run)


def _stamped(frame: pd.DataFrame, ns: int) -> pd.DataFrame:
    """A shard written before rows were stamped takes its file's time as theirs."""
    if STORED_AT in frame:
        return frame
    return frame.assign(**{STORED_AT: ns / 1e9})


def to_row(record: bus.Record, event: TeacherLabel | FeedbackEvent) -> dict[str, Any]:
    row = event.model_dump()
    row.update(topic=record.topic, partition=record.partition, offset=record.offset)
    return row


class ExampleStore:
    """Runs as a Ray actor (``max_concurrency`` ≥ 2): ``run`` loops until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.paths.store_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.counts = {"labels": 0, "feedback": 0, "dead_letters": 0, "compacted": 0}
        self._stop = threading.Event()
        self._rewinds = bus.Rewinds()  # recreated topics the next session reads from the start

    def run(self) -> None:
        """Store until ``stop``; a Kafka failure (a broker restart) reconnects after 2 s."""
        from distillery.metrics import loop_metrics, start_at_zero

        metrics = loop_metrics()
        start_at_zero(metrics.dead_letters, *({"topic": topic} for topic in KINDS))
        bus.keep_running(lambda: self._run_connected(metrics), self._stop, "store", self._rewinds)

    def _run_connected(self, metrics: Any) -> None:
        consumer = bus.make_consumer(self.settings.kafka, GROUP, list(KINDS))
        producer = bus.make_producer(self.settings.kafka)
        watch = bus.TopicWatch(consumer)
        pending: dict[str, list[dict[str, Any]]] = {"labels": [], "feedback": []}
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                self._rewinds.seek(consumer)
                records = bus.poll(consumer, 500, self.settings.store.flush_rows)
                try:
                    watch.check()
                except bus.TopicRecreated as exc:  # keep what the old topic gave; re-read the new
                    # with a new consumer (bus.Rewinds); records fetched at stale positions are
                    # dropped and nothing is committed (its positions mean nothing there)
                    records = [r for r in records if r.topic not in exc.topics]
                    for record in records:
                        self._take(record, pending, producer, metrics)
                    self._flush(pending, producer, metrics)
                    raise
                for record in records:
                    self._take(record, pending, producer, metrics)
                size = sum(len(rows) for rows in pending.values())
                due = time.monotonic() - last_flush >= self.settings.store.flush_s
                if size >= self.settings.store.flush_rows or (due and size):
                    self._flush(pending, producer, metrics)
                    consumer.commit()
                    last_flush = time.monotonic()
        finally:
            consumer.close()
            producer.close(timeout=5)

    def _take(
        self,
        record: bus.Record,
        pending: dict[str, list[dict[str, Any]]],
        producer: Any,
        metrics: Any,
    ) -> None:
        kind = KINDS[record.topic]
        try:
            event: TeacherLabel | FeedbackEvent = (
                decode(TeacherLabel, record.value)
                if kind == "labels"
                else decode(FeedbackEvent, record.value)
            )
        except DecodeError as exc:
            bus.send_dead_letter(producer, record, str(exc))
            self.counts["dead_letters"] += 1
            metrics.dead_letters.inc(tags={"topic": record.topic})
            return
        pending[kind].append(to_row(record, event))

    def _flush(self, pending: dict[str, list[dict[str, Any]]], producer: Any, metrics: Any) -> None:
        producer.flush(timeout=self.settings.kafka.send_timeout_s)  # dead letters first
        cfg = self.settings.store
        before_ns = time.time_ns() - int(cfg.compact_after_s * 1e9)
        for kind, rows in pending.items():
            if rows:
                write_shard(self.dir, kind, rows)
                self.counts[kind] += len(rows)
                metrics.stored_rows.inc(len(rows), tags={"kind": kind})
                rows.clear()
            try:  # an optimisation: a failure leaves the shards as they are
                self.counts["compacted"] += compact(self.dir, kind, cfg.compact_shards, before_ns)
            except Exception:
                log.warning("store: could not merge the %s shards", kind, exc_info=True)

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
