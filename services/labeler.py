"""The teacher labeler: a consumer group on sampled traffic that writes soft labels.

Per batch: poll → decode (bad messages to the dead-letter topic) → dedupe by request id → teacher
→ send labels → wait for the broker's acks → commit offsets. A crash before the commit replays the
batch; the example store dedupes by request id, so each request lands once in the training set.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from distillery import bus
from distillery.events import DecodeError, SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import Settings
from distillery.task import Task
from services.teacher import ZeroShotTeacher, softmax

log = logging.getLogger(__name__)
GROUP = "distillery-labeler"


def parse_batch(
    records: list[bus.Record], n_labels: int
) -> tuple[list[tuple[bus.Record, SampledPrediction]], list[tuple[bus.Record, str]]]:
    """Split records into (record, event) to label, deduped by request id, and (record, reason)."""
    good: dict[str, tuple[bus.Record, SampledPrediction]] = {}
    bad: list[tuple[bus.Record, str]] = []
    for record in records:
        try:
            event = decode(SampledPrediction, record.value)
        except DecodeError as exc:
            bad.append((record, str(exc)))
            continue
        if len(event.student_probs) != n_labels:
            reason = f"student_probs has {len(event.student_probs)} values, task has {n_labels}"
            bad.append((record, reason))
            continue
        good.setdefault(event.request_id, (record, event))
    return list(good.values()), bad


def to_labels(
    batch: list[tuple[bus.Record, SampledPrediction]], task: Task, teacher: ZeroShotTeacher
) -> list[TeacherLabel]:
    logits = teacher.logits([event.text for _, event in batch])  # (B, C)
    probs = softmax(logits)  # (B, C)
    return [
        TeacherLabel(
            request_id=event.request_id,
            text=event.text,
            labels=task.label_names,
            teacher_logits=[float(x) for x in logits[i]],
            teacher_probs=[float(x) for x in probs[i]],
            student_probs=event.student_probs,
            model_version=event.model_version,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        for i, (record, event) in enumerate(batch)
    ]


class Labeler:
    """Runs as a Ray actor (``max_concurrency`` ≥ 2 so ``stop`` and ``stats`` answer mid-run)."""

    def __init__(self, settings: Settings, task: Task) -> None:
        import torch

        torch.set_num_threads(1)
        self.settings = settings
        self.task = task
        cfg = settings.teacher
        self.teacher = ZeroShotTeacher(
            cfg.resolved_model_path(), task.prompts, cfg.temperature, cfg.max_tokens
        )
        self.counts = {"labelled": 0, "dead_letters": 0, "batches": 0}
        self._stop = threading.Event()
        self._metrics: Any = None

    def run(self) -> None:
        from monitoring.metrics import loop_metrics

        self._metrics = loop_metrics()
        consumer = bus.make_consumer(self.settings.kafka, GROUP, [Topics.SAMPLED])
        producer = bus.make_producer(self.settings.kafka)
        try:
            while not self._stop.is_set():
                records = self._gather(consumer)
                if records:
                    self._label(records, producer)
                    consumer.commit()
        finally:
            consumer.close()
            producer.close()

    def _gather(self, consumer: Any) -> list[bus.Record]:
        """Up to one teacher batch, waiting at most ``batch_wait_s`` once the first arrives."""
        size = self.settings.teacher.batch_size
        records = bus.poll(consumer, 500, size)
        deadline = time.monotonic() + self.settings.teacher.batch_wait_s
        while records and len(records) < size and time.monotonic() < deadline:
            records += bus.poll(consumer, 100, size - len(records))
        return records

    def _label(self, records: list[bus.Record], producer: Any) -> None:
        batch, bad = parse_batch(records, len(self.task.labels))
        futures = [bus.send_dead_letter(producer, record, reason) for record, reason in bad]
        if batch:
            labels = to_labels(batch, self.task, self.teacher)
            futures += [bus.send(producer, Topics.LABELS, lab, lab.request_id) for lab in labels]
        producer.flush()
        for future in futures:
            future.get(timeout=self.settings.kafka.send_timeout_s)  # raise before committing
        self.counts["labelled"] += len(batch)
        self.counts["dead_letters"] += len(bad)
        self.counts["batches"] += 1
        if batch:
            self._metrics.labels.inc(len(batch))
        if bad:
            self._metrics.dead_letters.inc(len(bad), tags={"topic": Topics.SAMPLED})

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
