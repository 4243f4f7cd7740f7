"""Kafka, behind one module: topic creation, producers and consumers with settings that work
against both the embedded broker and a production cluster, returning our event types."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel

from distillery.events import Topics, dead_letter, encode
from distillery.settings import KafkaSettings

log = logging.getLogger(__name__)


def ensure_topics(settings: KafkaSettings, topics: Iterable[str] = Topics.ALL) -> None:
    """Create the topics if missing (auto-creation would pick its own partition count)."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.servers(),
        request_timeout_ms=settings.request_timeout_ms,
        **settings.client_options(),
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, num_partitions=settings.partitions, replication_factor=1)
            for name in topics
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


def missing_topics(settings: KafkaSettings, topics: Iterable[str]) -> set[str]:
    """Which of ``topics`` the broker does not have."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.servers(),
        request_timeout_ms=settings.request_timeout_ms,
        **settings.client_options(),
    )
    try:
        return set(topics) - set(admin.list_topics())
    finally:
        admin.close()


def reachable(settings: KafkaSettings, timeout_s: float = 1.0) -> bool:
    """True if a TCP connection to one of the bootstrap servers opens within ``timeout_s``."""
    for server in (settings.bootstrap_servers or "").split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def make_producer(settings: KafkaSettings, in_order: bool = False) -> KafkaProducer:
    """acks=all with retries; not idempotent (it stays broken after an embedded broker restart).

    ``in_order``: one request in flight per connection, so a retry cannot reorder a partition,
    and every send reports success or failure within ``send_timeout_s`` (delivery timeout): a
    record that failed is never delivered later behind the caller's back.
    """
    timeout_ms = int(settings.send_timeout_s * 1000)
    bounded = {"request_timeout_ms": timeout_ms - 10, "delivery_timeout_ms": timeout_ms}
    return KafkaProducer(
        bootstrap_servers=settings.servers(),
        acks="all",
        retries=5,
        linger_ms=5,
        batch_size=settings.batch_bytes,
        enable_idempotence=False,
        max_in_flight_requests_per_connection=1 if in_order else 5,
        max_block_ms=timeout_ms,
        allow_auto_create_topics=False,  # topics are made by ensure_topics, with our partitions
        **(bounded if in_order else {"request_timeout_ms": settings.request_timeout_ms}),
        **settings.client_options(),
    )


def make_consumer(
    settings: KafkaSettings, group: str, topics: list[str], on_assigned: Any = None
) -> KafkaConsumer:
    """A reader of ``topics`` under ``group`` that commits only by hand, after its output is
    safe; ``on_assigned(partitions)`` runs whenever it is handed partitions. With
    ``membership`` "group" it joins the consumer group, so that several labelers share the
    partitions. With "assign" (the embedded broker's) it takes every partition itself, resumes
    from the offsets committed under ``group``, and commits without membership (generation −1,
    as Kafka's standalone consumers do; tansu keeps it). tansu's group coordinator wedged the
    group protocol twice after a broker restart: a LeaveGroup that overtook its own JoinGroup
    left a departed leader (stop 22), and a member that rejoined under its pre-restart id never
    got its SyncGroup answered, so the labeler read nothing for 120 s (CI, stops 28 and 29)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.servers(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        session_timeout_ms=6000,
        max_poll_interval_ms=60_000,
        heartbeat_interval_ms=2000,
        request_timeout_ms=max(settings.request_timeout_ms, 7_000),
        **settings.client_options(),
    )
    if settings.membership == "assign":
        try:
            parts = [tp for topic in topics for tp in partitions(consumer, topic)]
        except LookupError:
            consumer.close()
            raise
        consumer.assign(parts)
        if on_assigned is not None:
            on_assigned(parts)
        return consumer
    listener = None
    if on_assigned is not None:
        from kafka import ConsumerRebalanceListener

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            def on_partitions_assigned(self, assigned: Any) -> None:
                on_assigned(assigned)

        listener = _Listener()
    consumer.subscribe(topics, listener=listener)
    return consumer


def keep_running(
    body: Callable[[], None], stop: threading.Event, what: str, rewinds: Rewinds | None = None
) -> None:
    """Run ``body`` (one connected session of a consumer loop) until ``stop``; when Kafka fails
    it (a broker restart), log and start a new session after 2 s: uncommitted work replays. A
    session that raises ``TopicRecreated`` is followed at once by one that reads the recreated
    topics from their start (``rewinds``, which ``body`` seeks with)."""
    while not stop.is_set():
        try:
            body()
        except TopicRecreated as exc:
            if rewinds is not None:
                rewinds.add(exc.topics)
            log.warning("%s: %s; a new session reads it from the start", what, exc)
        except Exception:
            log.exception("%s lost Kafka; reconnecting (uncommitted work is replayed)", what)
            stop.wait(2.0)


def send(producer: KafkaProducer, topic: str, event: BaseModel, key: str) -> Any:
    """Queue one event keyed by request id (same id → same partition); returns the future."""
    return producer.send(topic, key=key.encode(), value=encode(event))


@dataclass(frozen=True)
class Record:
    """One consumed message: where it came from and its raw bytes."""

    topic: str
    partition: int
    offset: int
    value: bytes


def poll(consumer: KafkaConsumer, timeout_ms: int, max_records: int) -> list[Record]:
    batches = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    return [
        Record(m.topic, m.partition, m.offset, m.value or b"")
        for messages in batches.values()
        for m in messages
    ]


def topic_id(producer: KafkaProducer, topic: str) -> Any:
    """The id ``producer``'s cluster metadata holds for ``topic`` (None before it has one); a
    broker restart that recreated the topic gives it a new one. kafka-python keeps topic ids only
    in its private metadata, as ``TopicWatch`` reads them for a consumer."""
    return producer._metadata.topic_id(topic)


class TopicRecreated(RuntimeError):
    """A topic this consumer reads was deleted and created again (an in-memory broker that
    restarted empty): its positions and committed offsets mean nothing any more."""

    def __init__(self, topics: set[str], detail: str) -> None:
        super().__init__(detail)
        self.topics = topics


class TopicWatch:
    """Remembers the id of each topic a consumer reads; ``check`` raises ``TopicRecreated``
    once one changes. Without it a consumer that outlives a broker restart keeps reading the
    new, empty topic at its old positions and silently skips what lands below them."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._cluster = consumer._client.cluster  # topic ids live only here in kafka-python
        self._consumer = consumer
        self._ids: dict[str, Any] = {}

    def check(self) -> None:
        topics = self._consumer.subscription() or {tp.topic for tp in self._consumer.assignment()}
        changed: dict[str, tuple[Any, Any]] = {}
        for topic in topics:
            now = self._cluster.topic_id(topic)
            if now is None:
                continue
            seen = self._ids.setdefault(topic, now)
            if seen != now:
                changed[topic] = (seen, now)
        if changed:
            detail = ", ".join(
                f"topic {t} was recreated (id {a} -> {b})" for t, (a, b) in changed.items()
            )
            raise TopicRecreated(set(changed), detail)


class Rewinds:
    """Recreated topics a consumer loop's next session reads from their start. Not rewound in
    place: seeking the consumer that had fetched at stale positions back to the beginning once
    re-delivered only one of the two records it had fetched (the labeler's broker-restart test,
    ~1 run in 8 with busy cores, stop 35); a new consumer that seeks before its first fetch lost
    none in 24 runs. A loop lets ``TopicRecreated`` end its session (``keep_running`` adds the
    topics here) and calls ``seek`` before each poll of the next."""

    def __init__(self) -> None:
        self._topics: set[str] = set()

    def add(self, topics: set[str]) -> None:
        self._topics |= topics

    def seek(self, consumer: KafkaConsumer) -> bool:
        """Seek ``consumer``'s partitions of the waiting topics to their start, once assigned
        (at once with the embedded broker's ``assign``; after the first poll in a group). True
        when it sought any: the caller rereads what it derives from those topics."""
        if not self._topics:  # the usual poll
            return False
        parts = [tp for tp in consumer.assignment() if tp.topic in self._topics]
        if parts:
            consumer.seek_to_beginning(*parts)
            self._topics -= {tp.topic for tp in parts}
        return bool(parts)


def offsets_after(records: list[Record]) -> dict[Any, Any]:
    """What to commit once ``records`` are done: per partition, one past the highest offset."""
    from kafka.structs import OffsetAndMetadata

    last: dict[Any, int] = {}
    for record in records:
        tp = partition_of(record)
        last[tp] = max(last.get(tp, -1), record.offset)
    return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}


def send_dead_letter(producer: KafkaProducer, record: Record, reason: str) -> Any:
    log.warning("dead letter from %s@%d: %s", record.topic, record.offset, reason)
    letter = dead_letter(record.topic, record.partition, record.offset, reason, record.value)
    key = f"{record.topic}:{record.partition}:{record.offset}"
    return producer.send(Topics.DEAD_LETTER, key=key.encode(), value=encode(letter))


def read_all(settings: KafkaSettings, topic: str, timeout_s: float = 5.0) -> list[Record]:
    """Every message on ``topic`` now (no group, no commit): for status, tests and audits."""
    return read_tail(settings, topic, None, timeout_s)


def make_reader(settings: KafkaSettings) -> KafkaConsumer:
    """A consumer outside any group: it assigns its own partitions and commits nothing."""
    return KafkaConsumer(
        bootstrap_servers=settings.servers(),
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        request_timeout_ms=max(settings.request_timeout_ms, 7_000),
        **settings.client_options(),
    )


def partitions(consumer: KafkaConsumer, topic: str) -> list[Any]:
    """The topic's partitions; raises if the broker does not know the topic."""
    from kafka import TopicPartition

    found = consumer.partitions_for_topic(topic)
    if not found:
        raise LookupError(f"topic {topic} does not exist (yet)")
    return [TopicPartition(topic, p) for p in sorted(found)]


def partition_of(record: Record) -> Any:
    from kafka import TopicPartition

    return TopicPartition(record.topic, record.partition)


def read_tail(
    settings: KafkaSettings, topic: str, per_partition: int | None, timeout_s: float = 10.0
) -> list[Record]:
    """The last ``per_partition`` messages of each partition (all if None), up to now."""
    consumer = make_reader(settings)
    try:
        try:
            parts = partitions(consumer, topic)
        except LookupError:
            return []
        consumer.assign(parts)
        start, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        for tp in parts:
            first = start[tp] if per_partition is None else max(start[tp], end[tp] - per_partition)
            consumer.seek(tp, first)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in parts):
            out.extend(r for r in poll(consumer, 200, 10_000) if r.offset < end[partition_of(r)])
        return out
    finally:
        consumer.close()
