"""Feedback on a request that was not sampled brings its text to the teacher, whichever replica
the feedback reached.

The text lives only in the replica that answered (its sampler's expiring cache). Every replica
reads the feedback topic itself (no consumer group: each sees every event); the one holding the
request sends it to the teacher with reason "feedback". Feedback that was spooled reaches the
topic on replay, and the cache keeps texts for the join window, so it is recalled then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from distillery import bus
from distillery.events import DecodeError, FeedbackEvent, SampledPrediction, Topics, decode
from distillery.settings import KafkaSettings

log = logging.getLogger(__name__)


class Recall:
    def __init__(
        self,
        kafka: KafkaSettings,
        lookup: Callable[[str], SampledPrediction | None],
        send: Callable[[SampledPrediction], None],
        retry_s: float = 2.0,
    ) -> None:
        self.kafka = kafka
        self.lookup = lookup
        self.send = send
        self.retry_s = retry_s
        self.recalled = 0
        self._stop = threading.Event()
        self._positions: dict[Any, int] = {}  # partition → next offset, kept across reconnects
        threading.Thread(target=self._loop, name="recall", daemon=True).start()

    def _open(self) -> tuple[Any, bus.TopicWatch]:
        """A group-less reader of the feedback topic: where it left off, else at the end."""
        consumer = bus.make_reader(self.kafka)
        parts = bus.partitions(consumer, Topics.FEEDBACK)
        consumer.assign(parts)
        end = consumer.end_offsets(parts)
        for tp in parts:
            known = self._positions.get(tp)
            # a position past the end means the topic was recreated (embedded broker restart)
            self._positions[tp] = end[tp] if known is None else (known if known <= end[tp] else 0)
            consumer.seek(tp, self._positions[tp])
        return consumer, bus.TopicWatch(consumer)

    def _loop(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer, watch = self._open()
                records = bus.poll(consumer, 1_000, 500)
                watch.check()
                for record in records:
                    self._positions[bus.partition_of(record)] = record.offset + 1
                    self._take(record)
            except bus.TopicRecreated as exc:
                log.info("recall: %s; reading it from its start", exc)
                self._positions = {tp: 0 for tp in self._positions}
                if consumer is not None:
                    consumer.close()
                consumer = None
            except Exception as exc:
                log.info("recall: feedback topic unavailable (%s); retrying", exc)
                if consumer is not None:
                    consumer.close()
                consumer = None
                self._stop.wait(self.retry_s)
        if consumer is not None:
            consumer.close()

    def _take(self, record: bus.Record) -> None:
        try:
            event = decode(FeedbackEvent, record.value)
        except DecodeError:
            return  # the example store dead-letters it
        unsampled = self.lookup(event.request_id)
        if unsampled is not None:
            self.send(unsampled)
            self.recalled += 1

    def stop(self) -> None:
        self._stop.set()
