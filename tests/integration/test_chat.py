"""``POST /v1/chat/completions`` on the real Serve app with the real student LM (SmolLM2-135M
from its GGUF) and the real broker: whole and streamed answers that name their version, the
chat and the reply sampled for the teacher, feedback with a corrected reply, clear 4xx for bad
chats, and a stream that crosses a hot swap intact on the version it began with."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillery import bus
from distillery.contracts import StudentConfig
from distillery.events import FeedbackEvent, SampledPrediction, Topics, decode
from distillery.settings import KafkaSettings, PathSettings, ServeSettings, Settings
from models.generator import Generator
from models.gguf import student_gguf
from services.broker import EmbeddedBroker, free_port
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.integration
TASK = ROOT / "tasks" / "reply.yaml"
CHAT = [{"role": "user", "content": "Reply to this customer message in one sentence:\n\n"
         "The charger stopped working after two days."}]  # fmt: skip


@dataclass
class Stack:
    settings: Settings
    dashboard: str
    url: str
    v2: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import ray
    from ray import serve

    from cli.launcher import start_ray
    from services import deploy

    state = tmp_path_factory.mktemp("state")
    student = Generator.from_gguf(student_gguf(DATA))
    for version in (1, 2):  # the same weights under two versions: what a swap must keep apart
        student.save(state / f"v{version}")
    del student
    broker = EmbeddedBroker().start()
    settings = Settings(
        paths=PathSettings(state_dir=state, task_file=TASK),
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        serve=ServeSettings(
            port=free_port(),
            metrics_export_port=free_port(),
            sample_rate=1.0,
            max_new_tokens=512,
            request_timeout_s=60,
        ),
    )
    bus.ensure_topics(settings.kafka)
    dashboard, _ = start_ray(settings)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": settings.serve.port})
        config = StudentConfig(version=1, path=str(state / "v1"))
        deploy.deploy(dashboard, deploy.serve_config(settings, config))
        deploy.wait_running(dashboard, 1, timeout_s=300)
        yield Stack(settings, dashboard, f"http://127.0.0.1:{settings.serve.port}", state / "v2")
    finally:
        serve.shutdown()
        ray.shutdown()
        broker.stop()


def _chunks(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield "[DONE]" if line == "data: [DONE]" else json.loads(line[6:])


def test_a_reply_names_its_version_and_is_sampled_with_its_chat(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=120) as client:
        answer = client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 24})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["object"] == "chat.completion" and body["model_version"] == 1
        reply = body["choices"][0]["message"]["content"]
        assert reply and body["choices"][0]["finish_reason"] in {"stop", "length"}
        assert 0 < body["usage"]["completion_tokens"] <= 24
        rated = {"request_id": body["request_id"], "feedback_token": body["feedback_token"],
                 "rating": 1, "corrected_reply": "Sorry! A new charger is on its way."}  # fmt: skip
        assert client.post("/v1/feedback", json=rated).status_code == 202
        wrong = {**rated, "corrected_label": "positive", "corrected_reply": None}
        refused = client.post("/v1/feedback", json=wrong)
        assert refused.status_code == 422 and "the task generates" in refused.text
    sampled = [decode(SampledPrediction, r.value) for r in _read(stack, Topics.SAMPLED, 1)]
    event = next(e for e in sampled if e.request_id == body["request_id"])
    assert event.reply == reply and event.messages is not None
    assert [m.role for m in event.messages] == ["system", "user"]  # the task's system prompt
    feedback = [decode(FeedbackEvent, r.value) for r in _read(stack, Topics.FEEDBACK, 1)]
    assert feedback[0].corrected_reply == "Sorry! A new charger is on its way."


def _read(stack: Stack, topic: str, n: int, timeout_s: float = 30) -> list[bus.Record]:
    deadline = time.monotonic() + timeout_s
    records = bus.read_all(stack.settings.kafka, topic)
    while len(records) < n and time.monotonic() < deadline:
        time.sleep(0.5)
        records = bus.read_all(stack.settings.kafka, topic)
    return records


def test_a_stream_is_the_same_reply_token_by_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=120) as client:
        whole = client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 24})
        body = {"messages": CHAT, "max_tokens": 24, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = list(_chunks(response))
    assert chunks[-1] == "[DONE]"
    parts = [c for c in chunks[:-1] if isinstance(c, dict)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parts)
    assert text == whole.json()["choices"][0]["message"]["content"]
    assert {c["model_version"] for c in parts} == {1} and len(parts) > 3
    assert parts[-1]["feedback_token"] and parts[-1]["choices"][0]["finish_reason"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "must end with the user's"),
        ({"messages": CHAT, "max_tokens": 5000}, "max_tokens: 5000, the limit is 512"),
        ({"messages": CHAT, "logit_bias": {"1": 2}}, "logit_bias"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty or whitespace-only"),
    ],
)
def test_a_bad_chat_gets_a_422_naming_what_is_wrong(
    stack: Stack, body: dict[str, Any], reason: str
) -> None:
    answer = httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 422 and reason in answer.text, answer.text


def test_predict_on_a_generate_task_points_at_the_chat_route(stack: Stack) -> None:
    answer = httpx.post(f"{stack.url}/v1/predict", json={"text": "hello"}, timeout=30)
    assert answer.status_code == 404 and "/v1/chat/completions" in answer.text


def test_a_stream_crosses_a_hot_swap_on_the_version_it_began_with(stack: Stack) -> None:
    from services import deploy

    long = 240  # about 15 s of tokens here: longer than v2 takes to load and switch
    body = {"messages": CHAT, "max_tokens": long, "min_tokens": long, "stream": True,
            "stop": ["@@@"]}  # fmt: skip
    chunks: list[tuple[float, dict[str, Any] | str]] = []
    started = threading.Event()

    def read() -> None:
        with (
            httpx.Client(base_url=stack.url, timeout=300) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            for chunk in _chunks(response):
                chunks.append((time.monotonic(), chunk))
                started.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(120)
    config = StudentConfig(version=2, path=str(stack.v2))
    deploy.deploy(stack.dashboard, deploy.serve_config(stack.settings, config))
    swapped = _wait_version(stack, 2)
    reader.join(timeout=300)
    assert chunks and chunks[-1][1] == "[DONE]"
    assert chunks[-1][0] > swapped, "the stream ended before the swap: make it longer"
    parts = [c for _, c in chunks if isinstance(c, dict)]
    assert {c["model_version"] for c in parts} == {1}
    assert parts[-1]["usage"]["completion_tokens"] == long
    after = httpx.post(f"{stack.url}/v1/chat/completions", json={"messages": CHAT,
                       "max_tokens": 4}, timeout=120)  # fmt: skip
    assert after.json()["model_version"] == 2


def _wait_version(stack: Stack, version: int, timeout_s: float = 300) -> float:
    """When ``/readyz`` first names ``version`` (the stable slot switched)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = httpx.get(f"{stack.url}/readyz", timeout=10)
        if ready.status_code == 200 and ready.json()["model_version"] == version:
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"v{version} not serving after {timeout_s}s")
