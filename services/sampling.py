"""Which predictions go to the teacher, and the bounded, non-blocking path that sends them.

Predictions never wait on Kafka: sampled events go into a bounded queue drained by one thread;
when it is full the event is dropped and counted. Unsampled requests stay in a bounded cache so
that feedback on them can still bring their text to the teacher.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from distillery import bus
from distillery.events import SampledPrediction
from distillery.settings import KafkaSettings

log = logging.getLogger(__name__)


class Sampler:
    """Uniform sampling at ``rate``; an LRU cache of the unsampled for feedback-driven sampling."""

    def __init__(self, rate: float, cache_size: int, rng: random.Random | None = None) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"sample rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.cache_size = cache_size
        self.rng = rng or random.Random()
        self._unsampled: OrderedDict[str, SampledPrediction] = OrderedDict()
        self._lock = threading.Lock()

    def decide(self, event: SampledPrediction) -> bool:
        """True: send ``event`` to the teacher now. False: keep it in case feedback arrives."""
        if self.rng.random() < self.rate:
            return True
        if self.cache_size:
            with self._lock:
                self._unsampled[event.request_id] = event
                while len(self._unsampled) > self.cache_size:
                    self._unsampled.popitem(last=False)
        return False

    def on_feedback(self, request_id: str) -> SampledPrediction | None:
        """The cached event for a request that got feedback but was not sampled, once."""
        with self._lock:
            event = self._unsampled.pop(request_id, None)
        return None if event is None else event.model_copy(update={"reason": "feedback"})


class Publisher:
    """One Kafka producer behind a bounded queue, drained by a daemon thread."""

    def __init__(
        self,
        settings: KafkaSettings,
        maxsize: int,
        on_drop: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.settings = settings
        self.on_drop = on_drop
        self._queue: queue.Queue[tuple[str, BaseModel, str]] = queue.Queue(maxsize=maxsize)
        self._producer: Any = None
        self._producer_lock = threading.Lock()
        threading.Thread(target=self._drain, name="publisher", daemon=True).start()

    def producer(self) -> Any:
        with self._producer_lock:
            if self._producer is None:
                self._producer = bus.make_producer(self.settings)
            return self._producer

    def offer(self, topic: str, event: BaseModel, key: str) -> bool:
        """Queue without blocking; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((topic, event, key))
            return True
        except queue.Full:
            self.on_drop("queue_full")
            return False

    def send_and_wait(self, topic: str, event: BaseModel, key: str, timeout_s: float) -> None:
        """Send and block until the broker acknowledged (raises on failure or timeout)."""
        bus.send(self.producer(), topic, event, key).get(timeout=timeout_s)

    def _drain(self) -> None:
        while True:
            topic, event, key = self._queue.get()
            try:
                future = bus.send(self.producer(), topic, event, key)
                future.add_errback(lambda exc: self.on_drop("send_failed"))
            except Exception:
                log.exception("could not send to %s", topic)
                self.on_drop("send_failed")

    def flush(self, timeout_s: float = 10.0) -> None:
        while not self._queue.empty():
            threading.Event().wait(0.01)
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)
