"""The labeler and the example store against the real embedded broker (no Ray needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillery import bus
from distillery.events import DeadLetter, SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import KafkaSettings, PathSettings, Settings, StoreSettings
from distillery.task import load_task
from feedback.store import ExampleStore, read_labels
from services.broker import EmbeddedBroker
from services.labeler import Labeler
from tests.conftest import TASK

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
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
    for i, text in enumerate(texts):
        bus.send(producer, Topics.SAMPLED, _event(i, text), f"req-{i}")
    bus.send(producer, Topics.SAMPLED, _event(0, texts[0]), "req-0")  # a duplicate
    producer.send(Topics.SAMPLED, key=b"bad", value=b"{not json")
    wrong = _event(9, "x").model_dump_json().replace('"schema_version":1', '"schema_version":7')
    producer.send(Topics.SAMPLED, key=b"v7", value=wrong.encode())
    producer.flush()
    labels = [decode(TeacherLabel, r.value) for r in _wait_for(Topics.LABELS, 2, settings)]
    letters = [decode(DeadLetter, r.value) for r in _wait_for(Topics.DEAD_LETTER, 2, settings)]
    deadline = time.monotonic() + 30
    while len(read_labels(settings.paths.store_dir)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    labeler.stop()
    store.stop()
    by_id = {lab.request_id: lab for lab in labels}
    assert by_id["req-0"].teacher_probs[1] > 0.5  # positive text → "positive" (index 1)
    assert by_id["req-1"].teacher_probs[0] > 0.5
    assert abs(sum(by_id["req-0"].teacher_probs) - 1) < 1e-5
    assert {letter.payload() for letter in letters} >= {b"{not json", wrong.encode()}
    assert all(letter.reason.startswith("SampledPrediction") for letter in letters)
    stored = read_labels(settings.paths.store_dir)
    assert sorted(stored["request_id"]) == ["req-0", "req-1"]
    assert labeler.stats()["dead_letters"] == 2
