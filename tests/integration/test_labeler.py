"""The labeler and the example store against the real embedded broker (no Ray needed)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from distillery import bus
from distillery.events import DeadLetter, SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import PathSettings, Settings, StoreSettings
from distillery.task import load_task
from feedback.examples import read_kind, read_labels
from feedback.store import ExampleStore, write_shard
from services.broker import EmbeddedBroker
from services.labeler import Labeler
from tests.conftest import TASK

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        yield Settings(
            kafka=kafka,
            paths=PathSettings(state_dir=tmp_path, task_file=TASK),
            store=StoreSettings(flush_s=0.5),
        )


def _wait_for(topic: str, n: int, settings: Settings, timeout_s: float = 60) -> list[bus.Record]:
    deadline = time.monotonic() + timeout_s
    records: list[bus.Record] = []
    while time.monotonic() < deadline:
        records = bus.read_all(settings.kafka, topic)
        if len(records) >= n:
            return records
        time.sleep(0.5)
    raise AssertionError(f"{topic}: {len(records)} records after {timeout_s}s, wanted {n}")


def _event(i: int, text: str) -> SampledPrediction:
    return SampledPrediction(
        request_id=f"req-{i}", text=text, student_probs=[0.5, 0.5], model_version=1
    )


def test_labeler_labels_dead_letters_and_store_keeps_each_request_once(settings: Settings) -> None:
    task = load_task(settings.paths.task_file)
    labeler, store = Labeler(settings, task), ExampleStore(settings)
    threads = [threading.Thread(target=a.run, daemon=True) for a in (labeler, store)]
    for t in threads:
        t.start()
    producer = bus.make_producer(settings.kafka)
    texts = ["I loved every minute of it.", "A dull, miserable waste of time."]
    # The bad come first: the labeler and the store must keep going past them.
    producer.send(Topics.SAMPLED, key=b"bad", value=b"{not json")
    wrong = _event(9, "x").model_dump_json().replace('"schema_version":1', '"schema_version":7')
    producer.send(Topics.SAMPLED, key=b"v7", value=wrong.encode())
    producer.send(Topics.FEEDBACK, key=b"fb", value=b'{"request_id": "req-0", "rating": 9}')
    producer.send(Topics.LABELS, key=b"lv2", value=b'{"schema_version": 2, "request_id": "q"}')
    for i, text in enumerate(texts):
        bus.send(producer, Topics.SAMPLED, _event(i, text), f"req-{i}")
    bus.send(producer, Topics.SAMPLED, _event(0, texts[0]), "req-0")  # a duplicate
    producer.flush()
    records = _wait_for(Topics.LABELS, 3, settings)
    labels = [decode(TeacherLabel, r.value) for r in records if b'"schema_version":1' in r.value]
    letters = [decode(DeadLetter, r.value) for r in _wait_for(Topics.DEAD_LETTER, 4, settings)]
    deadline = time.monotonic() + 30
    while len(read_labels(settings.paths.store_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    labeler.stop()
    store.stop()
    by_id = {lab.request_id: lab for lab in labels}
    assert by_id["req-0"].teacher_probs[1] > 0.5  # positive text → "positive" (index 1)
    assert by_id["req-1"].teacher_probs[0] > 0.5
    assert abs(sum(by_id["req-0"].teacher_probs) - 1) < 1e-5
    by_source = {letter.payload(): letter for letter in letters}
    assert by_source[b"{not json"].source_topic == Topics.SAMPLED
    assert by_source[wrong.encode()].reason.startswith(
        "SampledPrediction: unknown schema_version 7"
    )
    bad_feedback = by_source[b'{"request_id": "req-0", "rating": 9}']
    assert bad_feedback.source_topic == Topics.FEEDBACK and "FeedbackEvent" in bad_feedback.reason
    assert (
        "unknown schema_version 2" in by_source[b'{"schema_version": 2, "request_id": "q"}'].reason
    )
    stored = read_labels(settings.paths.store_dir)
    assert sorted(stored["request_id"]) == ["req-0", "req-1"]
    assert labeler.stats()["dead_letters"] == 2
    assert store.stats()["dead_letters"] == 2


def _labeler(
    settings: Settings, log: Path, failpoint: str | None = None
) -> subprocess.Popen[bytes]:
    """`distillery labeler` in its own process, on small batches so a kill lands mid-stream."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.servers(),
        "DISTILLERY_KAFKA_MEMBERSHIP": settings.kafka.membership,
        "DISTILLERY_STATE_DIR": str(settings.paths.state_dir),
        "DISTILLERY_TASK_FILE": str(TASK),
        "DISTILLERY_TEACHER_BATCH_SIZE": "16",
        "DISTILLERY_TEACHER_BATCH_WAIT_S": "0.2",
    }
    env.pop("DISTILLERY_FAILPOINT", None)
    if failpoint:
        env["DISTILLERY_FAILPOINT"] = failpoint
    command = [str(Path(sys.executable).parent / "distillery"), "labeler"]
    return subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _label_ids(settings: Settings) -> list[str]:
    return [
        decode(TeacherLabel, r.value).request_id
        for r in bus.read_all(settings.kafka, Topics.LABELS)
    ]


def _wait_labels(
    settings: Settings, n: int, proc: subprocess.Popen[bytes], timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_label_ids(settings)) < n:
        assert proc.poll() is None, f"labeler exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"fewer than {n} labels after {timeout_s}s"
        time.sleep(0.3)


def test_labeler_killed_at_any_point_labels_each_request_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    producer = bus.make_producer(settings.kafka)
    sent = [f"req-{i}" for i in range(240)]
    for i, request_id in enumerate(sent):
        text = f"review {i}: " + ("a moving, lovely film" if i % 2 else "a dull, tiresome mess")
        bus.send(producer, Topics.SAMPLED, _event(i, text), request_id)
    bus.send(producer, Topics.SAMPLED, _event(7, "sampled twice"), "req-7")  # a duplicate event
    producer.flush()
    log = tmp_path / "labeler.log"
    # 1. SIGKILL after the first batch's labels are acknowledged, before its offsets commit.
    first = _labeler(settings, log, failpoint="labeler.before_commit")
    assert first.wait(timeout=120) == -signal.SIGKILL
    after_first = _label_ids(settings)
    assert 0 < len(after_first) <= 16
    # 2. SIGKILL from outside, wherever the labeler happens to be.
    second = _labeler(settings, log)
    _wait_labels(settings, 100, second)
    second.kill()
    second.wait(timeout=30)
    # 3. Run to the end; SIGTERM stops it cleanly.
    third = _labeler(settings, log)
    _wait_labels(settings, len(sent), third)
    time.sleep(5)  # a duplicate, if any, would land now
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=60) == 0, log.read_text()[-2_000:]
    ids = _label_ids(settings)
    assert Counter(ids) == Counter(sent), "each sampled request labelled exactly once"
    assert "already labelled (a replay)" in log.read_text()  # the first kill's batch came back
    store = ExampleStore(settings)
    thread = threading.Thread(target=store.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while len(read_kind(settings.paths.store_dir, "labels")) < len(sent):
        assert time.monotonic() < deadline, "the store did not take every label"
        time.sleep(0.5)
    store.stop()
    rows = read_kind(settings.paths.store_dir, "labels")
    assert sorted(rows["request_id"]) == sorted(sent)  # the training set: once each


def test_labeler_and_store_carry_on_after_the_broker_restarts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # It failed in CI (stop 28) and once in a full run here: no label in 120 s after the
    # restart, the labeler's group wedged in tansu (``bus.make_consumer``). The group protocol
    # and the labeler's own decisions log at INFO: kept, so a failure shows where it stopped.
    for name in ("kafka.coordinator", "kafka.consumer.subscription_state", "services.labeler"):
        caplog.set_level(logging.INFO, logger=name)
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        settings = Settings(
            kafka=kafka,
            paths=PathSettings(state_dir=tmp_path, task_file=TASK),
            store=StoreSettings(flush_s=0.5),
        )
        task = load_task(TASK)
        labeler, store = Labeler(settings, task), ExampleStore(settings)
        for worker in (labeler, store):
            threading.Thread(target=worker.run, daemon=True).start()
        _send_events(settings, range(0, 5))
        _wait_for(Topics.LABELS, 5, settings)
        broker.stop()
        broker.start()  # same port, nothing in it: what the supervisor does
        bus.ensure_topics(kafka)
        _send_events(settings, range(5, 10))
        try:
            records = _wait_for(Topics.LABELS, 5, settings, 120)
        except AssertionError as exc:
            sampled = len(bus.read_all(kafka, Topics.SAMPLED))
            raise AssertionError(
                f"{exc}; {sampled} events on {Topics.SAMPLED}; labeler counts {labeler.counts}"
            ) from exc
        after = [decode(TeacherLabel, r.value) for r in records]
        assert sorted(lab.request_id for lab in after) == [f"req-{i}" for i in range(5, 10)]
        deadline = time.monotonic() + 60
        while len(read_labels(tmp_path / "store")) < 10 and time.monotonic() < deadline:
            time.sleep(0.5)
        labeler.stop()
        store.stop()
        assert sorted(read_labels(tmp_path / "store")["request_id"]) == sorted(
            f"req-{i}" for i in range(10)
        )


def _send_events(settings: Settings, ids: range) -> None:
    """Each event acknowledged by the broker, as the Serve app's sampler would have it: a send
    that fails (a broker just restarted refused one once, and the test then blamed the labeler
    for 4 labels of 5) is sent again, so what these tests measure is the labeler."""
    producer = bus.make_producer(settings.kafka)
    try:
        for i in ids:
            event = _event(i, f"a fine film, take {i}")
            for _ in range(5):
                try:
                    bus.send(producer, Topics.SAMPLED, event, f"req-{i}").get(timeout=30)
                    break
                except KafkaError as exc:  # KafkaTimeoutError included
                    logging.getLogger(__name__).warning("send of req-%d failed: %r", i, exc)
                    time.sleep(1)
            else:
                raise AssertionError(f"req-{i}: the broker refused it 5 times")
    finally:
        producer.close()


def test_old_teachers_rows_are_relabelled_within_the_budget_and_supersede_the_old(
    settings: Settings,
) -> None:
    from feedback.examples import supersede_relabelled
    from monitoring.relabel import RELABEL_SHARE, Relabeler

    task = load_task(settings.paths.task_file)
    old = [
        {**_event(i, text).model_dump(), "labels": task.label_names, "teacher_logits": [0.0, 0.0],
         "teacher_probs": [0.5, 0.5], "source_partition": 0, "source_offset": i,
         "teacher_id": "embedding:retired:0000", "topic": Topics.LABELS, "partition": 0,
         "offset": i}
        for i, text in enumerate(["A wonderful film.", "A miserable waste.", "Great fun."] * 4)
    ]  # fmt: skip
    for i, row in enumerate(old):
        row["request_id"] = f"old-{i}"
    write_shard(settings.paths.store_dir, "labels", old)
    budget = 4 / RELABEL_SHARE  # labels a minute: a one-minute tick may send 4
    teacher = settings.teacher.model_copy(
        update={"old_labels": "relabel", "budget_per_min": budget}
    )
    settings = settings.model_copy(update={"teacher": teacher})
    labeler, store = Labeler(settings, task), ExampleStore(settings)
    for actor in (labeler, store):
        threading.Thread(target=actor.run, daemon=True).start()
    relabeler = Relabeler(settings)
    relabeler._last -= 120  # a minute's allowance (at most) is due
    assert relabeler.tick(labeler.teacher.teacher_id) == 4
    assert relabeler.tick(labeler.teacher.teacher_id) == 0  # the allowance is spent
    deadline = time.monotonic() + 60
    rows = read_labels(settings.paths.store_dir)
    while (rows["request_id"].str.startswith("relabel:").sum() < 4) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = read_labels(settings.paths.store_dir)
    labeler.stop()
    store.stop()
    merged = supersede_relabelled(rows)
    assert len(merged) == 12 and merged["request_id"].is_unique
    relabelled = merged[merged["teacher_id"] == labeler.teacher.teacher_id]
    assert sorted(relabelled["request_id"]) == sorted(f"old-{i}" for i in (8, 9, 10, 11))
    assert all(max(p) > 0.5 for p in relabelled["teacher_probs"])  # a real label now
