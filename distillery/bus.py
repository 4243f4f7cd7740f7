"""Kafka, behind one module: topic creation, producers and consumers with settings that work
against both the embedded broker and a production cluster, returning our event types."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterable
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
        bootstrap_servers=settings.servers(), request_timeout_ms=settings.request_timeout_ms
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


def make_producer(settings: KafkaSettings) -> KafkaProducer:
    """acks=all with retries; not idempotent (it stays broken after an embedded broker restart)."""
    return KafkaProducer(
        bootstrap_servers=settings.servers(),
        acks="all",
        retries=5,
        linger_ms=5,
        enable_idempotence=False,
        max_block_ms=int(settings.send_timeout_s * 1000),
        request_timeout_ms=settings.request_timeout_ms,
    )


def make_consumer(settings: KafkaSettings, group: str, topics: list[str]) -> KafkaConsumer:
    """A consumer-group member that commits only by hand, after its output is safe."""
    return KafkaConsumer(
        *topics,
        bootstrap_servers=settings.servers(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        session_timeout_ms=6000,
        max_poll_interval_ms=60_000,
        heartbeat_interval_ms=2000,
        request_timeout_ms=max(settings.request_timeout_ms, 7_000),
    )


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


def send_dead_letter(producer: KafkaProducer, record: Record, reason: str) -> Any:
    log.warning("dead letter from %s@%d: %s", record.topic, record.offset, reason)
    letter = dead_letter(record.topic, record.partition, record.offset, reason, record.value)
    key = f"{record.topic}:{record.partition}:{record.offset}"
    return producer.send(Topics.DEAD_LETTER, key=key.encode(), value=encode(letter))


def read_all(settings: KafkaSettings, topic: str, timeout_s: float = 5.0) -> list[Record]:
    """Every message on ``topic`` now (no group, no commit): for status, tests and audits."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.servers(), enable_auto_commit=False, group_id=None
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[Record] = []
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in parts):
            out.extend(poll(consumer, 200, 10_000))
        return out
    finally:
        consumer.close()
