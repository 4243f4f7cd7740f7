"""Fault tests on the real embedded broker and a real local Ray Serve.

The broker is stopped while 500 predictions and 100 feedback posts arrive, then restarted on the
same port (empty, as an in-memory broker comes back): every prediction is answered, and the 100
feedback events reach the topic once each, replayed from the replicas' spools. Predictions were
not sampled (rate 0), so the feedback also recalls their texts to the teacher, whichever of the
two replicas answered them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillery import bus
from distillery.contracts import StudentConfig
from distillery.events import FeedbackEvent, SampledPrediction, Topics, decode
from distillery.settings import (
    PathSettings,
    ServeSettings,
    Settings,
    StudentSettings,
)
from models.weights import teacher_model_path
from services.broker import EmbeddedBroker, Supervisor, free_port
from tests.conftest import TASK
from tests.integration.conftest import LoopSlot

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    settings: Settings
    broker: EmbeddedBroker
    url: str


def _tiny_student(folder: Path, settings: Settings) -> Path:
    from transformers import AutoTokenizer

    from distillery.task import load_task
    from models.student import new_student

    teacher = teacher_model_path(settings.teacher)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    shape = StudentSettings(layers=1, hidden=32, heads=2, intermediate=64)
    model = new_student(load_task(TASK).label_names, shape, tokenizer.vocab_size)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, loop_slot: LoopSlot) -> Iterator[Stack]:
    import ray
    from ray import serve

    from cli.launcher import start_ray
    from services import deploy

    loop_slot.release()  # one Ray stack at a time in this process
    state = tmp_path_factory.mktemp("state")
    broker = EmbeddedBroker().start()
    settings = Settings(
        paths=PathSettings(state_dir=state, task_file=TASK),
        kafka=broker.kafka(send_timeout_s=2),
        serve=ServeSettings(
            port=free_port(),
            metrics_export_port=free_port(),
            sample_rate=0.0,
            sample_margin_below=0.0,  # nothing is sampled on its own: only feedback recalls
        ),
    )
    bus.ensure_topics(settings.kafka)
    dashboard, _ = start_ray(settings)
    stack = Stack(settings, broker, f"http://127.0.0.1:{settings.serve.port}")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": settings.serve.port})
        model = _tiny_student(state / "v1", settings)
        deploy.deploy(
            dashboard, deploy.serve_config(settings, StudentConfig(version=1, path=str(model)))
        )
        deploy.wait_running(dashboard, 1)
        yield stack
    finally:
        serve.shutdown()
        ray.shutdown()
        broker.stop()
        stack.broker.stop()  # the one a test started in its place (its own process), if any


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, json=body, timeout=30)


def test_broker_down_loses_no_feedback_and_fails_no_prediction(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url) as client:
        assert client.get("/readyz").json()["feedback"] == "direct"
        stack.broker.stop()
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda i: _post(client, "/v1/predict", {"text": f"review number {i}"}),
                    range(500),
                )
            )
            assert Counter(a.status_code for a in answers) == {200: 500}
            served = [a.json()["predictions"][0] for a in answers[:100]]
            posts = list(pool.map(lambda p: _post(client, "/v1/feedback", _feedback(p)), served))
        assert Counter(p.status_code for p in posts) == {202: 100}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["feedback"] == "spooling" and ready.json()["broker"] == "unreachable"
        # What `distillery up`'s supervisor does: same port, empty, so it recreates the topics.
        stack.broker = EmbeddedBroker(port=stack.broker.port).start()
        bus.ensure_topics(stack.settings.kafka)
        wanted = {p["request_id"] for p in served}
        feedback = _await(stack.settings, Topics.FEEDBACK, 100)
        ids = [decode(FeedbackEvent, r.value).request_id for r in feedback]
        assert len(ids) == 100 and set(ids) == wanted  # all of them, none twice
        recalled = [
            decode(SampledPrediction, r.value) for r in _await(stack.settings, Topics.SAMPLED, 100)
        ]
        assert {e.request_id for e in recalled} == wanted and len(recalled) == 100
        assert {e.reason for e in recalled} == {"feedback"}
        assert client.get("/readyz").json()["feedback"] == "direct"
    spools = list(stack.settings.paths.spool_dir.glob("*.spool"))
    assert spools and all(p.stat().st_size == 0 for p in spools)


def _feedback(prediction: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": prediction["request_id"],
        "feedback_token": prediction["feedback_token"],
        "rating": 2,
        "corrected_label": "negative",
    }


def _await(settings: Settings, topic: str, n: int, timeout_s: float = 90) -> list[bus.Record]:
    """The topic's records once it holds ``n`` (then 3 s more, to catch a late duplicate)."""
    import time

    deadline = time.monotonic() + timeout_s
    records: list[bus.Record] = []
    while time.monotonic() < deadline:
        try:
            records = bus.read_all(settings.kafka, topic)
        except Exception:
            records = []
        if len(records) >= n:
            time.sleep(3)
            return bus.read_all(settings.kafka, topic)
        time.sleep(1)
    raise AssertionError(f"{topic}: {len(records)} records after {timeout_s}s, wanted {n}")


def test_supervisor_restarts_a_dead_broker_and_recreates_its_topics() -> None:
    import os
    import signal
    import time

    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        supervisor = Supervisor(broker, lambda: bus.ensure_topics(kafka), every_s=0.2)
        try:
            assert broker.child is not None and broker.child.proc is not None
            os.kill(broker.child.proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while supervisor.restarts == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert supervisor.restarts == 1 and broker.alive()
            assert bus.missing_topics(kafka, Topics.ALL) == set()
        finally:
            supervisor.stop()


def test_each_record_of_a_pipelined_burst_is_stored() -> None:
    """tansu 0.6.0 keeps only the first record of a multi-record batch (it acknowledges all of
    them): the producers put one record per batch by default (KafkaSettings.batch_bytes)."""
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka, [Topics.FEEDBACK])
        producer = bus.make_producer(kafka)
        futures = [
            producer.send(Topics.FEEDBACK, key=b"same-key", value=str(i).encode())
            for i in range(200)
        ]
        offsets = [f.get(timeout=10).offset for f in futures]
        assert offsets == list(range(200))
        records = bus.read_all(kafka, Topics.FEEDBACK)
        assert sorted(int(r.value) for r in records) == list(range(200))


def test_feedback_acknowledged_before_a_broker_restart_is_sent_again(tmp_path: Path) -> None:
    """The embedded tansu keeps its topics in memory: killed and restarted by the supervisor, it
    comes back empty, and the 20 feedback events it had acknowledged (which no store consumed)
    would be gone. The replica's delivery sees the topic's new id and sends them again, once."""
    import os
    import signal
    import time

    from feedback.delivery import Delivery

    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        supervisor = Supervisor(broker, lambda: bus.ensure_topics(kafka), every_s=0.2)
        delivery = Delivery(kafka, tmp_path / "spool", "replica-1", probe_s=0.2)
        try:
            deadline = time.monotonic() + 30
            while delivery._producer is None and time.monotonic() < deadline:
                time.sleep(0.1)  # the probe thread makes the producer once the broker answers
            outcomes = [
                delivery.put(Topics.FEEDBACK, f"request-{i}", str(i).encode()) for i in range(20)
            ]
            assert outcomes == ["sent"] * 20
            assert len(bus.read_all(kafka, Topics.FEEDBACK)) == 20
            assert broker.child is not None and broker.child.proc is not None
            os.kill(broker.child.proc.pid, signal.SIGKILL)
            while supervisor.restarts == 0 and time.monotonic() < deadline + 30:
                time.sleep(0.1)
            assert supervisor.restarts == 1
            settings = Settings(kafka=kafka)
            records = _await(settings, Topics.FEEDBACK, 20, timeout_s=60)
            assert sorted(int(r.value) for r in records) == list(range(20))
            assert delivery.counts["resent"] == 20 and delivery.spool.pending() == 0
        finally:
            delivery.stop()
            supervisor.stop()
