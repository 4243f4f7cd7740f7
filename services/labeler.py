"""The teacher labeler: a consumer of sampled traffic that writes soft labels.

Per batch: poll (up to ``batch_size``, or what came within ``batch_wait_s``) → decode (bad
messages to the dead-letter topic) → dedupe by request id → teacher → send labels → wait for the
broker's acks → commit offsets.

Exactly once, without Kafka transactions: a crash after the labels are acknowledged but before
the commit replays the batch. So whenever it is handed partitions (at start, after a crash, on
a rebalance of its group, after the broker restarted empty), it first reads back the tail of the
labels topic and remembers which request ids are labelled; a replayed event whose id is there
is skipped.
The example store also dedupes by request id on read.

Any ``models.teacher.Teacher`` labels: the labeler knows no backend. It never blocks its poll
loop on the teacher: while ``MAX_PENDING`` batches wait for the teacher, it pauses its
partitions, so no more records are fetched into memory, and keeps polling (in a group, a slow
LLM batch takes longer than the group's poll interval).
While the teacher is unavailable (its breaker open), the batch in hand is retried until it is
back; nothing after it is committed, so every sampled event waits on its topic. An answer the
teacher cannot read goes to the dead-letter topic with the raw answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from distillery import bus
from distillery.events import (
    DecodeError,
    SampledPrediction,
    TeacherLabel,
    Topics,
    decode,
    encode,
)
from distillery.faults import failpoint
from distillery.settings import Settings
from distillery.task import Task
from models.factory import labeler_teacher
from models.openai_api import EndpointUnreachable
from models.responder import Responder
from models.teacher import Teacher, TeacherHealth, TeacherUnavailable
from models.teacher_labels import Labelled, Recent, answer_batch, parse_batch
from services.labeler_metrics import export_cost, export_labels, export_mix
from services.teacher_mix import MixFollower

log = logging.getLogger(__name__)
GROUP = "distillery-labeler"
MAX_PENDING = 2  # batches handed to the teacher and not yet sent: one labelled, one queued
CASCADE = "cascade"  # the source named on a cascade answer's dead letter
YIELD_S = 1.0  # the longest a sampled batch waits for live cascade calls (bench.cascade)
TRACED_AFTER_REWIND = 5  # batches logged by partition and offset after a broker restart


def _where(records: list[bus.Record]) -> str:
    return ", ".join(f"{r.topic}[{r.partition}]@{r.offset}" for r in records)


def _one_torch_thread() -> None:
    """torch's intra-op thread count is per thread (OpenMP): set it in the teacher's thread too."""
    import torch

    torch.set_num_threads(1)


@dataclass(frozen=True)
class Pending:
    """A batch handed to the teacher: its records (for the commit), what is being labelled,
    what goes to the dead-letter topic, how many were already labelled."""

    records: list[bus.Record]
    batch: list[tuple[bus.Record, SampledPrediction]]
    bad: list[tuple[bus.Record, str]]
    skipped: int
    future: Future[Labelled] | None


class Labeler:
    """Runs as a Ray actor (``max_concurrency`` ≥ 2 so ``stop`` and ``stats`` answer mid-run),
    or as its own process (``distillery labeler``)."""

    def __init__(self, settings: Settings, task: Task) -> None:
        import torch

        torch.set_num_threads(1)
        self.settings = settings
        self.task = task
        cfg = settings.teacher
        self.teacher: Teacher | Responder = _NoTeacherYet()
        self._health = self.teacher.health()
        self._build_teacher()
        self.counts = {"labelled": 0, "dead_letters": 0, "batches": 0, "already_labelled": 0}
        self._labelled = Recent(max(cfg.dedupe_scan * settings.kafka.partitions, 10_000))
        self._inflight: set[str] = set()
        self._rescan = threading.Event()
        self._traced = 0  # batches still to log by partition and offset (after a rewind)
        self._rewinds = bus.Rewinds()  # recreated topics the next session reads from the start
        self._stop = threading.Event()
        self._metrics: Any = None
        self._producer: Any = None  # the cascade's, made on its first answer
        self._producer_lock = threading.Lock()
        self._answer_lock = threading.Lock()
        self._answering = 0  # cascade calls in flight
        self._no_answers = threading.Event()
        self._no_answers.set()
        self._mix = MixFollower(settings.paths.state_dir)

    def _build_teacher(self) -> bool:
        """Build the configured teacher; an LLM endpoint that does not answer yet is waited for
        by ``run`` (a labeler restarted while its teacher is down must not crash-loop); any
        other start-up check that fails raises."""
        try:
            self.teacher = labeler_teacher(
                self.settings.teacher, self.task, self.settings.paths.state_dir
            )
        except EndpointUnreachable as exc:
            log.warning("labeler: %s; waiting for the teacher", exc)
            self._health = TeacherHealth(teacher_id="unknown", state="open", last_error=str(exc))
            return False
        self._health = self.teacher.health()
        return True

    def run(self) -> None:
        """Label until ``stop``; a Kafka failure (a broker restart) reconnects after 2 s."""
        from distillery.metrics import loop_metrics, start_at_zero

        self._metrics = loop_metrics()
        start_at_zero(self._metrics.dead_letters, {"topic": Topics.SAMPLED})
        while isinstance(self.teacher, _NoTeacherYet) and not self._build_teacher():
            if self._stop.wait(2.0):
                return
        bus.keep_running(self._run_connected, self._stop, "labeler", self._rewinds)

    def _run_connected(self) -> None:
        """Pipelined: while the teacher labels batch n on its thread, this thread fetches batch
        n + 1 and queues it behind n; once n is labelled it sends n's labels, waits for their
        acks and commits n's own offsets; so the teacher never waits on Kafka, and Kafka never
        waits on the teacher (the consumer keeps polling). Every assignment (this session's
        first included) and every rewind of a recreated topic reads the labels topic back
        before any record is labelled."""
        consumer = bus.make_consumer(
            self.settings.kafka, GROUP, [Topics.SAMPLED], on_assigned=lambda _: self._rescan.set()
        )
        producer = bus.make_producer(self.settings.kafka)
        watch = bus.TopicWatch(consumer)
        self._inflight.clear()
        pool = ThreadPoolExecutor(1, "teacher", initializer=_one_torch_thread)
        try:
            pending: deque[Pending] = deque()
            while not self._stop.is_set():
                try:
                    self._step(consumer, producer, watch, pool, pending)
                except bus.TopicRecreated:  # the broker restarted empty: keep_running starts
                    # over with a new consumer (bus.Rewinds); pending batches' records and
                    # offsets belong to the old topic, so they are not finished below
                    self._traced = TRACED_AFTER_REWIND
                    raise
            while pending:  # stopping: send what the teacher finishes; the rest stays uncommitted
                head = pending.popleft()
                if head.future is not None:
                    wait_futures([head.future], timeout=self.settings.teacher.timeout_s)
                    if not head.future.done() or head.future.exception() is not None:
                        break
                self._finish(head, producer, consumer, watch)
        finally:
            pool.shutdown(wait=True)
            consumer.close()
            producer.close(timeout=5)

    def _step(
        self,
        consumer: Any,
        producer: Any,
        watch: bus.TopicWatch,
        pool: ThreadPoolExecutor,
        pending: deque[Pending],
    ) -> None:
        """Fetch one batch and queue it for the teacher, unless ``MAX_PENDING`` wait already:
        then pause the partitions and poll only to stay in the group and keep the client's
        metadata fresh (a recreated topic is seen). Finish, in order, the batches the teacher
        is done with."""
        if self._rewinds.seek(consumer):  # a recreated topic: read the labels topic back first
            self._rescan.set()
        if len(pending) >= MAX_PENDING:
            consumer.pause(*consumer.assignment())
            head = pending[0].future
            if head is not None:
                wait_futures([head], timeout=0.5)
            records = bus.poll(consumer, 0, 1)  # paused: nothing, but the session stays alive
        else:
            if consumer.paused():
                consumer.resume(*consumer.paused())
            records = self._gather(consumer)
        try:
            watch.check()  # before a record read at a stale position is labelled
        except bus.TopicRecreated:
            if records:  # the restart test's lost event: were its partition's records here?
                log.info("labeler: dropped at stale positions: %s", _where(records))
            raise
        if self._rescan.is_set():
            self._rescan.clear()
            self.remember_labelled()
        if records:
            if self._traced > 0:  # a lost event after a broker restart shows where it went
                self._traced -= 1
                log.info("labeler: after a rewind, a batch of %s", _where(records))
            pending.append(self._start(records, pool))
        while pending and (pending[0].future is None or pending[0].future.done()):
            self._finish(pending.popleft(), producer, consumer, watch)

    def remember_labelled(self) -> int:
        """Read the tail of the labels topic into the set of labelled request ids."""
        tail = bus.read_tail(self.settings.kafka, Topics.LABELS, self.settings.teacher.dedupe_scan)
        for record in tail:
            try:
                self._labelled.add(decode(TeacherLabel, record.value).request_id)
            except DecodeError:
                continue
        log.info("labeler: %d labels read back, %d ids remembered", len(tail), len(self._labelled))
        return len(tail)

    def _gather(self, consumer: Any) -> list[bus.Record]:
        """Up to one teacher batch, waiting at most ``batch_wait_s`` once the first arrives."""
        size = self.settings.teacher.labeler_batch()
        records = bus.poll(consumer, 500, size)
        deadline = time.monotonic() + self.settings.teacher.batch_wait_s
        while records and len(records) < size and time.monotonic() < deadline:
            records += bus.poll(consumer, 100, size - len(records))
        return records

    def _start(self, records: list[bus.Record], pool: ThreadPoolExecutor) -> Pending:
        """Decode, dedupe (against labelled and in-flight ids) and hand the batch to the teacher."""
        parsed, bad = parse_batch(records, len(self.task.labels))
        batch = [
            (r, e)
            for r, e in parsed
            if e.request_id not in self._labelled and e.request_id not in self._inflight
        ]
        if len(batch) < len(parsed):
            log.info("labeler: skipped %d already labelled (a replay)", len(parsed) - len(batch))
        self._inflight.update(e.request_id for _, e in batch)
        with_states = self.settings.train.hidden_weight > 0
        future = pool.submit(self._label_when_up, batch, with_states) if batch else None
        return Pending(records, batch, bad, len(parsed) - len(batch), future)

    def _label_when_up(
        self, batch: list[tuple[bus.Record, SampledPrediction]], with_states: bool
    ) -> Labelled:
        """``answer_batch``, retried for as long as the teacher is unavailable (until ``stop``).
        A live request waiting on the teacher (``answer``) goes first: each batch waits up to
        ``YIELD_S`` for the cascade's calls in flight to finish."""
        while True:
            self._no_answers.wait(YIELD_S)
            self._follow_mix()
            try:
                labelled = answer_batch(batch, self.task, self.teacher, with_states)
            except TeacherUnavailable as exc:
                self._note_health()
                log.warning(
                    "labeler: teacher unavailable (%s); retrying in %.1fs", exc, exc.retry_in_s
                )
                if self._stop.wait(min(max(exc.retry_in_s, 0.1), 5.0)):
                    raise
                continue
            self._note_health()
            return labelled

    def _follow_mix(self) -> None:
        """An ensemble teacher mixes by the shares the last round measured (``teacher_mix``)."""
        if self._mix.follow(self.teacher) and self._metrics is not None:
            export_mix(self._metrics, self._mix.weights)

    def _note_health(self) -> None:
        health = self.teacher.health()
        if health.state != self._health.state:
            log.warning("labeler: teacher %s is now %s", health.teacher_id, health.state)
        self._health = health
        if self._metrics is not None:
            tags = {"teacher_id": health.teacher_id}
            self._metrics.teacher_up.set(0.0 if health.state == "open" else 1.0, tags=tags)

    def _finish(
        self, pending: Pending, producer: Any, consumer: Any, watch: bus.TopicWatch
    ) -> None:
        """Send the labels and dead letters, wait for the acks, then commit these offsets."""
        done = pending.future.result() if pending.future is not None else None
        labels = done.labels if done is not None else []
        unreadable = done.unreadable if done is not None else []
        failpoint("labeler.before_send")
        bad = pending.bad + unreadable
        futures = [bus.send_dead_letter(producer, r, reason) for r, reason in bad]
        futures += [bus.send(producer, Topics.LABELS, lab, lab.request_id) for lab in labels]
        producer.flush(timeout=self.settings.kafka.send_timeout_s)
        for future in futures:
            future.get(timeout=self.settings.kafka.send_timeout_s)  # raise before committing
        for lab in labels:
            self._labelled.add(lab.request_id)
        self._inflight.difference_update(e.request_id for _, e in pending.batch)
        failpoint("labeler.before_commit")
        watch.check()  # offsets of a topic that is gone must not land on its successor
        consumer.commit(offsets=bus.offsets_after(pending.records))
        self._count(pending, len(labels), len(bad))
        export_labels(self._metrics, labels)
        if done is not None:
            export_cost(self._metrics, self.counts, self.teacher.teacher_id, done.cost)

    def _count(self, pending: Pending, labelled: int, dead: int) -> None:
        self.counts["labelled"] += labelled
        self.counts["already_labelled"] += pending.skipped
        self.counts["dead_letters"] += dead
        self.counts["batches"] += 1
        if labelled:
            self._metrics.labels.inc(labelled)
        if dead:
            self._metrics.dead_letters.inc(dead, tags={"topic": Topics.SAMPLED})

    def answer(self, events: list[SampledPrediction], train: list[bool]) -> list[Any]:
        """The cascade (``services.cascade``): the teacher's ``TeacherLabel`` for each text a
        replica defers, now, on this actor's own thread beside the sampled stream. A label whose
        request allows training is also sent to the labels topic, so it trains the student like
        a sampled one without a second teacher call. None per text while the teacher is
        unavailable, or for an answer it gave that cannot be read (sent as a dead letter)."""
        _one_torch_thread()
        batch = [(bus.Record(CASCADE, 0, i, encode(e)), e) for i, e in enumerate(events)]
        with self._answer_lock:
            self._answering += 1
            self._no_answers.clear()
        try:
            with_states = self.settings.train.hidden_weight > 0
            self._follow_mix()
            done = answer_batch(batch, self.task, self.teacher, with_states)
        except TeacherUnavailable:
            self._note_health()
            return [None] * len(events)
        finally:
            with self._answer_lock:
                self._answering -= 1
                if not self._answering:
                    self._no_answers.set()
        self._note_health()
        producer = self._answer_producer()
        allowed = {e.request_id for e, ok in zip(events, train, strict=True) if ok}
        for lab in done.labels:
            if lab.request_id in allowed:
                bus.send(producer, Topics.LABELS, lab, lab.request_id)
        for record, reason in done.unreadable:
            bus.send_dead_letter(producer, record, reason)
        kept = len(allowed & {lab.request_id for lab in done.labels})
        if self._metrics is not None:
            if kept:  # a Ray counter refuses inc(0): an opted-out text made every answer fail
                self._metrics.labels.inc(kept)
            export_cost(self._metrics, self.counts, self.teacher.teacher_id, done.cost)
        self.counts["cascade"] = self.counts.get("cascade", 0) + len(done.labels)
        by_id = {lab.request_id: lab for lab in done.labels}
        return [by_id.get(e.request_id) for e in events]

    def _answer_producer(self) -> Any:
        with self._producer_lock:
            if self._producer is None:
                self._producer = bus.make_producer(self.settings.kafka)
            return self._producer

    def stop(self) -> None:
        self._stop.set()
        with self._producer_lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def teacher_health(self) -> TeacherHealth:
        """The teacher's id and breaker state, as of its last call."""
        return self._health


class _NoTeacherYet:
    """Stands in while an LLM endpoint has not answered the start-up checks yet."""

    teacher_id = "unknown"
    has_states = False

    def label(self, texts: list[str], with_states: bool = False) -> Any:
        raise TeacherUnavailable("the teacher has not answered its start-up checks yet", 2.0)

    def health(self) -> TeacherHealth:
        return TeacherHealth(teacher_id=self.teacher_id, state="open")
