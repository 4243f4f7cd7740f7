"""The labeler's pure parts: batch parsing with dedupe, the bounded id set, commit offsets."""

from __future__ import annotations

import threading

import pytest
from kafka.structs import TopicPartition

from distillery import bus
from distillery.events import SampledPrediction, Topics, encode
from models.teacher_labels import Recent, parse_batch


def _record(offset: int, value: bytes, partition: int = 0) -> bus.Record:
    return bus.Record(Topics.SAMPLED, partition, offset, value)


def _sampled(request_id: str, probs: list[float] | None = None) -> bytes:
    event = SampledPrediction(
        request_id=request_id, text="t", student_probs=probs or [0.5, 0.5], model_version=1
    )
    return encode(event)


def test_parse_batch_dedupes_by_request_id_and_sets_aside_the_bad() -> None:
    records = [
        _record(0, _sampled("a")),
        _record(1, b"not json"),
        _record(2, _sampled("a")),  # the same request sampled twice
        _record(3, _sampled("b", [0.2, 0.3, 0.5])),  # three labels for a two-label task
        _record(4, _sampled("c")),
    ]
    good, bad = parse_batch(records, n_labels=2)
    assert [(r.offset, e.request_id) for r, e in good] == [(0, "a"), (4, "c")]
    assert [r.offset for r, _ in bad] == [1, 3]
    assert "student_probs has 3 values, task has 2" in bad[1][1]


def test_recent_forgets_the_oldest_beyond_its_size() -> None:
    recent = Recent(3)
    for rid in "abcd":
        recent.add(rid)
    assert "a" not in recent and all(rid in recent for rid in "bcd")
    recent.add("b")  # seen again: now the newest
    recent.add("e")
    assert "c" not in recent and "b" in recent and len(recent) == 3


def test_offsets_after_commits_one_past_the_highest_per_partition() -> None:
    records = [_record(5, b""), _record(3, b""), _record(9, b"", partition=2)]
    offsets = bus.offsets_after(records)
    assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 6, 2: 10}


class _Cluster:
    def __init__(self) -> None:
        self.ids: dict[str, str | None] = {Topics.SAMPLED: None}

    def topic_id(self, topic: str) -> str | None:
        return self.ids[topic]


class _Consumer:
    def __init__(self) -> None:
        self._client = type("Client", (), {"cluster": _Cluster()})()
        self.parts = [TopicPartition(Topics.SAMPLED, 0), TopicPartition(Topics.LABELS, 0)]
        self.rewound: list[TopicPartition] = []

    def subscription(self) -> set[str]:
        return {Topics.SAMPLED}

    def assignment(self) -> set[TopicPartition]:
        return set(self.parts)

    def seek_to_beginning(self, *parts: TopicPartition) -> None:
        self.rewound += parts


def test_topic_watch_raises_once_a_read_topic_is_recreated() -> None:
    consumer = _Consumer()
    watch = bus.TopicWatch(consumer)
    watch.check()  # no metadata yet: nothing to compare
    consumer._client.cluster.ids[Topics.SAMPLED] = "id-1"
    watch.check()
    watch.check()
    consumer._client.cluster.ids[Topics.SAMPLED] = "id-2"  # the broker restarted empty
    with pytest.raises(bus.TopicRecreated, match=r"traffic\.sampled\.v1 was recreated") as err:
        watch.check()
    assert err.value.topics == {Topics.SAMPLED}


def test_rewinds_seek_only_recreated_topics_once_their_partitions_are_assigned() -> None:
    rewinds, consumer = bus.Rewinds(), _Consumer()
    assert not rewinds.seek(consumer)  # nothing recreated: no seek
    rewinds.add({Topics.SAMPLED})
    parts = consumer.parts
    consumer.parts = []  # a group's consumer before its first poll: nothing assigned yet
    assert not rewinds.seek(consumer)
    consumer.parts = parts
    assert rewinds.seek(consumer)
    assert consumer.rewound == [TopicPartition(Topics.SAMPLED, 0)]  # only the recreated topic's
    assert not rewinds.seek(consumer)  # once: later polls read on from where it is
    assert consumer.rewound == [TopicPartition(Topics.SAMPLED, 0)]


def test_a_session_ended_by_a_recreated_topic_leaves_it_to_the_next_to_rewind() -> None:
    rewinds, stop, sessions = bus.Rewinds(), threading.Event(), []

    def session() -> None:
        sessions.append(1)
        if len(sessions) == 1:
            raise bus.TopicRecreated({Topics.SAMPLED}, "topic traffic.sampled.v1 was recreated")
        stop.set()

    bus.keep_running(session, stop, "test", rewinds)
    assert len(sessions) == 2  # a second session ran after the first ended
    consumer = _Consumer()
    assert rewinds.seek(consumer)
    assert consumer.rewound == [TopicPartition(Topics.SAMPLED, 0)]
