"""Deliver an event to Kafka and wait for the broker's ack, or spool it when the broker is down.

``put`` is what the feedback route calls: it returns once the event is safe, either acknowledged
by the broker (acks=all) or fsync'd into the local spool. While anything is spooled, new events
go behind it, so replay keeps their order. A background thread probes the broker every
``probe_s``; when it answers and the topics exist, it replays the spool in order and adopts the
spools of dead replicas.

An acknowledgement is only as durable as the broker. The embedded tansu keeps its topics in
memory: killed and restarted, it comes back with empty topics, and what it had acknowledged but
the store had not consumed yet is gone (4 of 519 accepted events in ``bench.chaos`` before this
guard). So each event acknowledged in the last ``kafka.resend_window_s`` is remembered with the id
its topic had then; when a probe finds that topic under a new id, those events are sent again.
A copy the store already had is harmless: the store's readers keep one rating per request and key
(``feedback.examples.latest_ratings``), ordered by the event's own time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distillery import bus
from distillery.settings import KafkaSettings
from feedback.spool import Entry, Spool, adopt_orphans, quarantined

log = logging.getLogger(__name__)
Outcome = Literal["sent", "spooled"]
RECENT_MAX = 100_000  # acknowledged events remembered at most (a bound on memory, ~100 MB at 1 KB)


@dataclass(frozen=True)
class Acked:
    at: float  # time.monotonic() of the acknowledgement
    topic_id: Any  # the topic's id in the broker's metadata then (None: not known)
    entry: Entry


class Delivery:
    def __init__(
        self,
        kafka: KafkaSettings,
        spool_dir: Path,
        owner: str,
        probe_s: float = 1.0,
        adopt_every_s: float = 30.0,
        on_probe: Callable[[int, int, int], None] = lambda pending, replayed, quarantined: None,
    ) -> None:
        self.kafka = kafka
        self.spool_dir = spool_dir
        self.spool = Spool(spool_dir, owner)
        self.probe_s = probe_s
        self.adopt_every_s = adopt_every_s
        # every probe: (spool bytes pending, events replayed so far, records quarantined on disk)
        self.on_probe = on_probe
        self.counts = {"sent": 0, "spooled": 0, "replayed": 0, "adopted": 0, "resent": 0}
        self._acked: deque[Acked] = deque(maxlen=RECENT_MAX)  # oldest first
        self._acked_lock = threading.Lock()
        self._topic_ids: dict[str, Any] = {}  # topic → its id at the newest acknowledgement
        self._down = threading.Event()  # set: the broker failed us; spool until replay catches up
        if self.spool.pending():
            self._down.set()  # a restarted owner finds its old spool: it goes first
        self._producer: Any = None
        self._producer_lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="spool-replay", daemon=True).start()

    def put(self, topic: str, key: str, value: bytes) -> Outcome:
        """Block until the event is acknowledged by the broker or fsync'd to the spool."""
        direct = self._producer is not None and not self._down.is_set()
        if direct and self.spool.pending() == 0:
            if self._send([Entry(topic, key, value, 0)]) == 1:
                self.counts["sent"] += 1
                return "sent"
            self._down.set()
        self.spool.append(topic, key, value)
        self.counts["spooled"] += 1
        return "spooled"

    def spooling(self) -> bool:
        return self._down.is_set() or self.spool.pending() > 0

    def _producer_now(self) -> Any:
        """The producer; made only by the probe thread once the broker answers (making one
        while the broker is down blocks for its bootstrap timeout, 30 s)."""
        with self._producer_lock:
            if self._producer is None:
                raise ConnectionError("no producer: the broker has not answered yet")
            return self._producer

    def _drop_producer(self) -> None:
        """Close a producer that failed us and start afresh on the next send."""
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:
                log.debug("closing a failed producer", exc_info=True)

    def _send(self, entries: list[Entry]) -> int:
        """Send in order and wait; the number acknowledged, a prefix of ``entries``."""
        # The producer reports every record by its delivery timeout (send_timeout_s), so after
        # this wait each one is settled: acknowledged, or failed and never sent later.
        deadline = time.monotonic() + self.kafka.send_timeout_s + 2.0
        failure: Exception | None = None
        acked = 0
        futures = []
        try:
            producer = self._producer_now()
            for e in entries:
                futures.append(producer.send(e.topic, key=e.key.encode(), value=e.value))
        except Exception as exc:  # no metadata within max_block_ms: this one was not queued
            failure = exc
        prefix = True  # only an unbroken run of acks from the first entry counts
        for future in futures:
            try:
                future.get(timeout=max(0.01, deadline - time.monotonic()))
            except Exception as exc:
                failure, prefix = failure or exc, False
            acked += int(prefix)
        if acked:
            self._remember(producer, entries[:acked])
        if failure is not None:
            log.warning("broker did not acknowledge (%s): spooling", type(failure).__name__)
            self._drop_producer()
        return acked

    def _remember(self, producer: Any, entries: list[Entry]) -> None:
        """Keep acknowledged ``entries`` with their topic's id, for ``_resend_if_recreated``."""
        if self.kafka.resend_window_s <= 0:
            return
        now = time.monotonic()
        ids = {topic: bus.topic_id(producer, topic) for topic in {e.topic for e in entries}}
        with self._acked_lock:
            self._acked.extend(Acked(now, ids[e.topic], e) for e in entries)
            self._topic_ids.update(ids)

    def _resend_if_recreated(self) -> None:
        """Send again the events acknowledged within the window into a topic that has since
        been recreated (its id changed); they are remembered again under the new id."""
        cutoff = time.monotonic() - self.kafka.resend_window_s
        producer = self._producer_now()
        with self._acked_lock:
            while self._acked and self._acked[0].at < cutoff:
                self._acked.popleft()
            current = {t: bus.topic_id(producer, t) for t in self._topic_ids}
            if all(current[t] in (None, known) for t, known in self._topic_ids.items()):
                return  # the usual probe: no topic recreated, no scan of what is remembered
            lost = [
                a for a in self._acked
                if a.topic_id is not None and current[a.entry.topic] not in (None, a.topic_id)
            ]  # fmt: skip
            if not lost:
                return
            gone = {id(a) for a in lost}
            kept = (a for a in self._acked if id(a) not in gone)
            self._acked = deque(kept, maxlen=RECENT_MAX)
        log.warning("%d events acknowledged in the last %.0f s went to a topic since recreated "
                    "(a broker restart lost them): sending them again", len(lost),
                    self.kafka.resend_window_s)  # fmt: skip
        sent = self._send([a.entry for a in lost])
        self.counts["resent"] += sent
        if sent < len(lost):  # the broker failed again: the rest wait for the next probe
            with self._acked_lock:
                self._acked.extendleft(reversed(lost[sent:]))
                self._topic_ids.update({a.entry.topic: a.topic_id for a in lost[sent:]})

    def _loop(self) -> None:
        last_adopt = 0.0
        while not self._stop.wait(self.probe_s):
            replayed = self.counts["replayed"] + self.counts["adopted"]
            self.on_probe(self.spool.pending(), replayed, quarantined(self.spool_dir))
            if not bus.reachable(self.kafka):
                self._down.set()
                continue
            try:
                with self._producer_lock:
                    if self._producer is None:
                        self._producer = bus.make_producer(self.kafka, in_order=True)
                self._resend_if_recreated()
                if self.spooling():
                    self._replay()
                if time.monotonic() - last_adopt >= self.adopt_every_s:
                    last_adopt = time.monotonic()
                    self.counts["adopted"] += adopt_orphans(self.spool_dir, self._send)
            except Exception:
                log.exception("spool replay failed; will retry")

    def _replay(self) -> None:
        # Topics are created by whoever runs the broker (``distillery up``'s supervisor recreates
        # them when it restarts the embedded one); never here: concurrent creates of one topic
        # from several replicas lost acknowledged writes on the embedded broker.
        missing = bus.missing_topics(self.kafka, {e.topic for e in self.spool.entries(50)})
        if missing:
            log.info("waiting for topics %s before replaying the spool", sorted(missing))
            return
        self.counts["replayed"] += self.spool.replay(self._send)
        if self.spool.pending() == 0:
            self._down.clear()
            log.info("spool replayed; sending directly again")

    def stop(self) -> None:
        self._stop.set()
        self._drop_producer()
        self.spool.close()
