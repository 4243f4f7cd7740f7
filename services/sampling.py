"""Which predictions go to the teacher, and the bounded, non-blocking path that sends them.

The sampler spends a teacher budget (labels per minute) where labels teach most: every request
that got feedback, then predictions the student is unsure of (low margin between its top two
labels: uncertainty sampling, Lewis & Gale 1994), then inputs far from its training window
(``models.novelty``), then a uniform base rate that keeps the training data representative.
Uniform picks may only spend the upper half of the bucket, so a burst of routine traffic cannot
starve the priority reasons, except during a canary: then a uniform draw is taken first and from
the whole bucket, because the rollout compares the two versions on uniform picks only (targeted
picks follow each version's own margins) and, under steady load with a weak student, the
priority reasons kept the bucket below half and the canary never got its evidence. Unsampled
requests stay in a bounded, expiring cache so that feedback on them can still bring their text
to the teacher. It keeps each event as its encoded bytes: as pydantic models, 50,000 soak texts
took 76.3 MiB of one replica's heap (1,600 B each; the soak's replicas grew 50 MB/h, stop 28);
as bytes, 31.6 MiB (663 B each; ``python -m bench.join_cache``).

Predictions never wait on Kafka: sampled events go into a bounded queue drained by one thread;
when it is full the event is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from distillery import bus
from distillery.events import SampledPrediction, SampleReason, Topics, decode, encode
from distillery.metrics import ServeMetrics
from distillery.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass(frozen=True)
class Policy:
    """When a prediction is a candidate for the teacher."""

    base_rate: float  # uniform share of all predictions
    margin_below: float  # top-1 minus top-2 probability under which the student is unsure
    novelty_above: float  # novelty score over which an input is far from the training window

    def __post_init__(self) -> None:
        if not 0 <= self.base_rate <= 1:
            raise ValueError(f"sample rate must be in [0, 1], got {self.base_rate}")
        if not 0 <= self.margin_below <= 1:
            raise ValueError(f"margin threshold must be in [0, 1], got {self.margin_below}")
        if self.novelty_above <= 0:
            raise ValueError(f"novelty threshold must be > 0, got {self.novelty_above}")


def margin(probs: list[float]) -> float:
    """Top-1 minus top-2 probability; 1.0 for a single label or none (a generate task)."""
    if len(probs) < 2:
        return 1.0
    top = np.sort(np.asarray(probs))[::-1]
    return float(top[0] - top[1])


def candidate(
    event: SampledPrediction, policy: Policy, draw: float, canary: bool = False
) -> SampleReason | None:
    """Why ``event`` should go to the teacher, or None; ``draw`` is uniform in [0, 1). In a
    ``canary`` the uniform draw comes first: it must not depend on the answering version."""
    if canary and draw < policy.base_rate:
        return "uniform"
    if margin(event.student_probs) < policy.margin_below:
        return "low_margin"
    if event.novelty is not None and event.novelty > policy.novelty_above:
        return "novel"
    if draw < policy.base_rate:
        return "uniform"
    return None


class TokenBucket:
    """``per_min`` tokens a minute, holding at most one minute's worth."""

    def __init__(self, per_min: float, clock: Clock = time.monotonic) -> None:
        if per_min <= 0:
            raise ValueError(f"budget must be > 0 labels per minute, got {per_min}")
        self.rate = per_min / 60.0  # tokens per second
        self.capacity = max(per_min, 1.0)
        self.level = self.capacity
        self.clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now

    def take(self, floor: float = 0.0) -> bool:
        """Spend one token if at least ``floor`` stay; False leaves the bucket unchanged."""
        self._refill()
        if self.level - 1 < floor:
            return False
        self.level -= 1
        return True

    def force(self) -> None:
        """Spend one token even into debt (at most one minute's worth): feedback always goes."""
        self._refill()
        self.level = max(self.level - 1, -self.capacity)


@dataclass(frozen=True)
class Decision:
    event: SampledPrediction | None  # what to send, with its reason; None if skipped
    reason: str  # the sample reason, or why it was skipped: "not_selected" / "over_budget"
    candidate: str  # what it was a candidate for ("none" if nothing)


class Sampler:
    """Decides per prediction under the budget; keeps the unsampled for ``ttl_s`` seconds."""

    UNIFORM_RESERVE = 0.5  # uniform picks leave this share of the bucket to priority reasons

    def __init__(
        self,
        policy: Policy,
        budget: TokenBucket,
        cache_size: int,
        ttl_s: float = 3_600,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self.rng = rng or random.Random()
        self._unsampled: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # expiry, event
        self._lock = threading.Lock()

    def decide(self, event: SampledPrediction, canary: bool = False) -> Decision:
        """Send ``event`` to the teacher now, or keep it in case feedback arrives; ``canary``:
        a rollout is in canary (uniform picks first, from the whole bucket)."""
        reason = candidate(event, self.policy, self.rng.random(), canary)
        with self._lock:
            if reason is not None:
                reserve = reason == "uniform" and not canary
                floor = self.budget.capacity * self.UNIFORM_RESERVE if reserve else 0
                if self.budget.take(floor):
                    return Decision(event.model_copy(update={"reason": reason}), reason, reason)
            self._keep(event)
        return Decision(None, "not_selected" if reason is None else "over_budget", reason or "none")

    def _keep(self, event: SampledPrediction) -> None:
        if not self.cache_size:
            return
        now = self.budget.clock()
        self._unsampled[event.request_id] = (now + self.ttl_s, encode(event))
        while self._unsampled and (
            len(self._unsampled) > self.cache_size or next(iter(self._unsampled.values()))[0] < now
        ):
            self._unsampled.popitem(last=False)

    def on_feedback(self, request_id: str) -> SampledPrediction | None:
        """The cached event for a request that got feedback but was not sampled, once; it
        spends budget even when none is left."""
        with self._lock:
            entry = self._unsampled.pop(request_id, None)
            if entry is None or entry[0] < self.budget.clock():
                return None
            self.budget.force()
        return decode(SampledPrediction, entry[1]).model_copy(update={"reason": "feedback"})


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


def make_sampler(settings: Settings) -> Sampler:
    """This replica's sampler: its share of the teacher budget, the cache for the join window."""
    serve_cfg = settings.serve
    policy = Policy(
        serve_cfg.sample_rate, serve_cfg.sample_margin_below, serve_cfg.sample_novelty_above
    )
    budget = TokenBucket(settings.teacher.labels_per_min() / serve_cfg.num_replicas)
    return Sampler(policy, budget, serve_cfg.unsampled_cache_size, settings.store.join_window_s)


class Sampling:
    """A replica's path to the teacher: the sampler decides under the budget, the publisher
    sends off the request path, and every outcome is counted in the replica's metrics."""

    def __init__(self, settings: Settings, metrics: ServeMetrics) -> None:
        self.metrics = metrics
        self.sampler = make_sampler(settings)
        self.publisher = Publisher(
            settings.kafka,
            settings.serve.sample_queue_size,
            on_drop=lambda reason: metrics.sample_dropped.inc(tags={"reason": reason}),
        )

    def offer(self, event: SampledPrediction, canary: bool = False) -> None:
        """Sample ``event`` or keep it for the join window; ``canary``: a rollout's canary is
        live (the caller has its variant in hand)."""
        decision = self.sampler.decide(event, canary)
        if decision.event is None:
            self.metrics.skipped.inc(
                tags={"reason": decision.reason, "candidate": decision.candidate}
            )
        elif self.publisher.offer(Topics.SAMPLED, decision.event, event.request_id):
            self.metrics.sampled.inc(tags={"reason": decision.reason})

    def recalled(self, event: SampledPrediction) -> None:
        """Send an event that feedback recalled (``services.recall``), outside the budget."""
        if self.publisher.offer(Topics.SAMPLED, event, event.request_id):
            self.metrics.sampled.inc(tags={"reason": "feedback"})
