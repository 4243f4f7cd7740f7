"""The live loop with the LLM teacher, as ``distillery up`` starts it with no teacher URL: the
local llama.cpp server on the real GGUF, a real local Ray, the real embedded broker. A served
prediction is sampled, labelled over HTTP and lands with its teacher_id; the teacher is killed
under traffic and restarted, and every sampled event is labelled once afterwards, with the
breaker's opening and closing visible in /readyz, the metrics and ``status``."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from cli.launcher import Running, up
from distillery import bus
from distillery.events import SampledPrediction, TeacherLabel, Topics, decode
from distillery.settings import (
    GateSettings,
    PathSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
    TeacherSettings,
    TrainSettings,
)
from models.factory import llm_teacher
from models.llm_teacher import soft_label
from services.broker import free_port
from services.llm_server import LocalLLM
from tests.conftest import DATA, TASK
from tests.integration.conftest import LoopSlot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llm_loop(tmp_path_factory: pytest.TempPathFactory, loop_slot: LoopSlot) -> Iterator[Running]:
    state = tmp_path_factory.mktemp("llm-state")
    settings = Settings(
        paths=PathSettings(state_dir=state, data_dir=DATA, task_file=TASK),
        serve=ServeSettings(
            port=free_port(), metrics_export_port=free_port(), sample_rate=1.0, num_replicas=1
        ),
        teacher=TeacherSettings(
            kind="llm",
            breaker_failures=2,
            breaker_reset_s=2,
            max_retries=1,
            timeout_s=10,
            budget_per_min=600,
            batch_wait_s=0.3,
        ),
        scheduler=SchedulerSettings(enabled=False, seed_size=200),
        train=TrainSettings(scratch_epochs=2),
        gate=GateSettings(min_holdout=5, first_version_min_agreement=0),
    )
    loop_slot.release()  # one loop at a time in this process
    running = up(settings, say=lambda _: None)
    yield running
    running.stop()


def _predict(running: Running, text: str) -> dict:
    response = httpx.post(f"{running.api_url}/v1/predict", json={"text": text}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json()["predictions"][0])


def _labels(running: Running) -> list[TeacherLabel]:
    return [
        decode(TeacherLabel, r.value) for r in bus.read_all(running.settings.kafka, Topics.LABELS)
    ]


def _wait_labelled(running: Running, ids: set[str], timeout_s: float) -> list[TeacherLabel]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        labels = [lab for lab in _labels(running) if lab.request_id in ids]
        if {lab.request_id for lab in labels} >= ids:
            return labels
        time.sleep(1)
    missing = ids - {lab.request_id for lab in _labels(running)}
    raise AssertionError(f"{len(missing)} of {len(ids)} never labelled: {sorted(missing)[:5]}")


def _teacher_up_metric(running: Running) -> float | None:
    text = httpx.get(running.metrics_url, timeout=10).text
    found = re.findall(r"^(?:ray_)?distillery_teacher_up\{[^}]*\} (\S+)$", text, re.M)
    return float(found[-1]) if found else None


def _wait_state(running: Running, state: str, up_metric: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    ready: dict = {}
    metric = None
    while time.monotonic() < deadline:
        ready = httpx.get(f"{running.api_url}/readyz", timeout=10).json()
        metric = _teacher_up_metric(running)
        if ready["teacher"]["state"] == state and metric == up_metric:
            return
        time.sleep(1)
    raise AssertionError(f"teacher never {state}/{up_metric}: readyz {ready}, metric {metric}")


def test_a_served_prediction_is_labelled_by_the_local_llm_with_its_teacher_id(
    llm_loop: Running,
) -> None:
    answer = _predict(llm_loop, "What a wonderful, heartfelt film.")
    (label,) = _wait_labelled(llm_loop, {answer["request_id"]}, 120)
    teacher = llm_teacher(llm_loop.settings.teacher, llm_loop.task)  # the same server, asked again
    assert label.teacher_id == teacher.teacher_id
    assert label.teacher_id.startswith("llm:qwen2.5-coder-0.5b-instruct-q4:")
    expected = soft_label(teacher.ask(label.text).top_logprobs, llm_loop.task.label_names)
    assert expected is not None
    np.testing.assert_allclose(label.teacher_probs, expected, atol=0.03)  # llama.cpp's noise
    assert label.teacher_probs[1] > 0.5 and label.model_version == 1
    teacher.close()


def test_status_names_the_teacher_and_that_v1_learnt_from_another(llm_loop: Running) -> None:
    import ray

    teacher = ray.get(llm_loop.scheduler.status.remote(), timeout=30).teacher
    assert teacher.kind == "llm" and teacher.state == "up"
    assert teacher.teacher_id is not None and teacher.teacher_id.startswith("llm:qwen2.5-coder")
    learnt = teacher.serving_version_learnt_from  # v1: the seed, labelled by the embedding
    assert list(learnt) == [key for key in learnt if key.startswith("embedding:minilm:")]
    assert teacher.changed is True and teacher.note is not None and "learnt from" in teacher.note


def test_teacher_killed_under_traffic_then_back_labels_every_sampled_event_once(
    llm_loop: Running,
) -> None:
    _wait_state(llm_loop, "up", 1.0, 60)
    server = llm_loop.llm
    assert server is not None
    server.kill()
    sent = [_predict(llm_loop, f"The {i}th film was a delight.")["request_id"] for i in range(6)]
    _wait_state(llm_loop, "down", 0.0, 90)
    sent += [_predict(llm_loop, f"Review {i}: a tedious mess.")["request_id"] for i in range(6)]
    time.sleep(3)  # events sampled while the teacher is down wait on their topic
    assert not {lab.request_id for lab in _labels(llm_loop)} & set(sent)
    restarted = LocalLLM(server.gguf, server.threads, server.ctx, port=server.port).start()
    llm_loop.llm = restarted  # so the fixture stops it
    _wait_state(llm_loop, "up", 1.0, 120)
    sampled = {
        decode(SampledPrediction, r.value).request_id
        for r in bus.read_all(llm_loop.settings.kafka, Topics.SAMPLED)
    } & set(sent)
    assert len(sampled) == len(sent)  # sample_rate 1, a budget far above 12
    labels = _wait_labelled(llm_loop, sampled, 240)
    counts = Counter(lab.request_id for lab in _labels(llm_loop) if lab.request_id in sampled)
    assert set(counts.values()) == {1}, counts
    assert all(lab.teacher_id == labels[0].teacher_id for lab in labels)
