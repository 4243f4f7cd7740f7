"""The generative loop as ``distillery up`` starts it for ``tasks/reply.yaml``: the base SmolLM2
is version 1 on Serve, the local llama.cpp server is the teacher, on the real broker and a real
local Ray. A chat completion is sampled, the teacher answers it, a round fine-tunes on Ray Train,
the gate passes it, a shadow answers the chats unseen and a canary a share of them, and it is
promoted on their live evidence,
and a stream crosses a hot swap intact; bad chats get a clear 4xx."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cli.launcher import Running, up
from cli.status import summary
from distillery import vader
from distillery.settings import (
    GateSettings,
    PathSettings,
    RolloutSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
    TeacherSettings,
    TrainSettings,
)
from feedback.examples import read_labels
from services.broker import free_port
from tests.conftest import DATA, ROOT
from tests.integration.conftest import LoopSlot
from training.registry import Registry

pytestmark = pytest.mark.integration
TASK = ROOT / "tasks" / "reply.yaml"
PROMPT = "Reply to this customer message in one sentence:\n\n"
CHATS = 12


@pytest.fixture(scope="module")
def gen_loop(tmp_path_factory: pytest.TempPathFactory, loop_slot: LoopSlot) -> Iterator[Running]:
    state = tmp_path_factory.mktemp("state")
    settings = Settings(
        paths=PathSettings(state_dir=state, data_dir=DATA, task_file=TASK),
        serve=ServeSettings(
            port=free_port(),
            metrics_export_port=free_port(),
            sample_rate=1.0,
            max_new_tokens=512,
            request_timeout_s=60,
        ),
        teacher=TeacherSettings(batch_wait_s=0.2),  # kind: chosen by `up` for a generate task
        scheduler=SchedulerSettings(enabled=False, poll_s=1),
        # three epochs: the loss assertion compares the last epoch's steps with the first's,
        # and at one step an epoch two epochs compared two single steps (once the second was
        # the higher, 0.934 against 0.819)
        train=TrainSettings(epochs=3, holdout_fraction=0.25),
        gate=GateSettings(agreement_margin=0.15),
        # a shadow and canary measured on a few chats: each version's replies, their teacher
        # replies, errors and latency (the defaults want 100 requests and 20 labels a version)
        rollout=RolloutSettings(
            shadow_s=0,
            canary_s=0,
            canary_share=0.5,
            min_requests=3,
            min_labels=3,
            min_feedback=2,
            report_s=1,
            max_stage_s=120,
        ),
    )
    loop_slot.release()  # one loop at a time in this process
    running = up(settings, say=lambda _: None)
    yield running
    running.stop()


def _chat(client: httpx.Client, text: str, **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": PROMPT + text}], "max_tokens": 32, **extra}
    return client.post("/v1/chat/completions", json=body, timeout=120)


def _chunks(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield "[DONE]" if line == "data: [DONE]" else json.loads(line[6:])


def test_a_sampled_chat_is_answered_by_the_teacher_and_a_round_promotes(
    gen_loop: Running,
) -> None:
    import ray

    texts = [r.text for r in vader.load("amazon", DATA)[:CHATS]]
    with httpx.Client(base_url=gen_loop.api_url) as client:
        answers = [_chat(client, text) for text in texts]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["model_version"] for a in answers} == {1}
        first = answers[0].json()
        fix = "We're sorry; a replacement is on its way."
        rated = {"request_id": first["request_id"], "feedback_token": first["feedback_token"],
                 "rating": 1, "corrected_reply": fix}  # fmt: skip
        assert client.post("/v1/feedback", json=rated).status_code == 202
        wrong = {**rated, "corrected_label": "positive", "corrected_reply": None}
        refused = client.post("/v1/feedback", json=wrong)
        assert refused.status_code == 422 and "the task generates" in refused.text
        labels = _replies(gen_loop, CHATS)
        served = {a.json()["request_id"]: a.json()["choices"][0]["message"]["content"]
                  for a in answers}  # fmt: skip
        for _, row in labels.iterrows():
            assert row["student_reply"] == served[row["request_id"]] and row["reply"]
            assert str(row["teacher_id"]).startswith("llm-gen:")
        report = ray.get(gen_loop.scheduler.retrain.remote("test: a generative round"))
        assert report.outcome == "shadow" and report.version == 2, report
        assert report.train_metrics["loss"] < report.train_metrics["first_epoch_loss"]
        gate = report.gate
        assert gate is not None and gate.candidate is not None and gate.current is not None
        assert gate.candidate.rows >= 1  # held-out chats: their teacher replies are now
        assert gate.candidate.logp > gate.current.logp  # likelier under v2 than v1
        answered_by = _until_promoted(gen_loop, client, texts)
        assert answered_by == {1, 2}, answered_by  # the canary's share, and the rest
        registry = Registry(gen_loop.settings.paths.model_store_url())
        ends = [e for e in registry.history() if e.version == 2]
        assert [e.event for e in ends][-3:] == ["shadow", "canary", "promoted"], ends
        labels = read_labels(gen_loop.settings.paths.store_dir)
        mirrored = labels[labels["shadow_version"] == 2]  # v1 answered them, v2 unseen
        assert len(mirrored) >= 3 and set(mirrored["model_version"]) == {1}, len(mirrored)
        assert mirrored["shadow_reply"].str.len().min() > 0 and mirrored["reply"].notna().all()
        assert ends[-1].reason.startswith("automatic: canary: every check passed"), ends[-1]
        after = _chat(client, texts[0])
        assert after.json()["model_version"] == 2
        status = ray.get(gen_loop.scheduler.status.remote())
        assert status.current_version == 2
        page = summary(status)  # what `distillery status` prints
        assert page.startswith("serving   v2") and "llm-gen:" in page, page


def _until_promoted(
    running: Running, client: httpx.Client, texts: list[str], timeout_s: float = 420
) -> set[int]:
    """Send chats while v2 is a canary, rating each answer 4 (the negative-feedback check's
    evidence), until the rollout promotes it; the versions that answered them."""
    import ray

    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    status = ray.get(running.scheduler.status.remote())
    for text in itertools.cycle(texts):
        if status.rollout is None or time.monotonic() > deadline:
            break
        answer = _chat(client, text)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen.add(body["model_version"])
        rated = {k: body[k] for k in ("request_id", "feedback_token")} | {"rating": 4}
        assert client.post("/v1/feedback", json=rated).status_code == 202
        status = ray.get(running.scheduler.status.remote())
    assert status.current_version == 2, (status.current_version, status.rollout_verdict)
    while set(status.replicas.values()) != {2} and time.monotonic() < deadline + 60:
        time.sleep(1)  # the registry promotes first, then every replica swaps
        status = ray.get(running.scheduler.status.remote())
    assert set(status.replicas.values()) == {2}, status.replicas
    return seen


def _replies(running: Running, n: int, timeout_s: float = 240) -> Any:
    """The store's label rows once ``n`` chats have their teacher's reply."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        labels = read_labels(running.settings.paths.store_dir)
        if "reply" in labels and labels["reply"].notna().sum() >= n:
            return labels[labels["reply"].notna()]
        time.sleep(1)
    raise AssertionError(f"fewer than {n} teacher replies in the store after {timeout_s}s")


def test_a_stream_is_the_same_reply_token_by_token(gen_loop: Running) -> None:
    with httpx.Client(base_url=gen_loop.api_url, timeout=120) as client:
        whole = _chat(client, "The box arrived crushed.", max_tokens=24)
        body = {"messages": [{"role": "user", "content": PROMPT + "The box arrived crushed."}],
                "max_tokens": 24, "stream": True}  # fmt: skip
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = list(_chunks(response))
    assert chunks[-1] == "[DONE]"
    parts = [c for c in chunks[:-1] if isinstance(c, dict)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parts)
    assert text == whole.json()["choices"][0]["message"]["content"]
    assert len({c["model_version"] for c in parts}) == 1 and len(parts) > 3
    assert parts[-1]["feedback_token"] and parts[-1]["choices"][0]["finish_reason"]


CHAT = [{"role": "user", "content": PROMPT + "It broke."}]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "must end with the user's"),
        ({"messages": CHAT, "max_tokens": 5000}, "max_tokens: 5000, the limit is 512"),
        ({"messages": CHAT, "logit_bias": {"1": 2}}, "logit_bias"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty or whitespace-only"),
        # 32 messages of 2,000 characters, each within its bound: ~13k tokens, over the context
        ({"messages": [{"role": "user", "content": "word " * 400}] * 32}, "student's context is"),
    ],
)
def test_a_bad_chat_gets_a_422_naming_what_is_wrong(
    gen_loop: Running, body: dict[str, Any], reason: str
) -> None:
    answer = httpx.post(f"{gen_loop.api_url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 422 and reason in answer.text, answer.text


def test_predict_on_a_generate_task_points_at_the_chat_route(gen_loop: Running) -> None:
    answer = httpx.post(f"{gen_loop.api_url}/v1/predict", json={"text": "hello"}, timeout=30)
    assert answer.status_code == 404 and "/v1/chat/completions" in answer.text


def test_a_stream_crosses_a_hot_swap_on_the_version_it_began_with(gen_loop: Running) -> None:
    import ray

    long = 240  # about 15 s of tokens here: longer than a promotion takes to reach Serve
    body = {"messages": CHAT, "max_tokens": long, "min_tokens": long, "stream": True,
            "stop": ["@@@"]}  # fmt: skip
    chunks: list[tuple[float, dict[str, Any] | str]] = []
    started = threading.Event()

    def read() -> None:
        with (
            httpx.Client(base_url=gen_loop.api_url, timeout=300) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            for chunk in _chunks(response):
                chunks.append((time.monotonic(), chunk))
                started.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(120)
    ray.get(gen_loop.scheduler.promote.remote(1, "test: back to v1 mid-stream"))
    swapped = time.monotonic()  # every replica answers with v1 from here
    reader.join(timeout=300)
    assert chunks and chunks[-1][1] == "[DONE]"
    assert chunks[-1][0] > swapped, "the stream ended before the swap: make it longer"
    parts = [c for _, c in chunks if isinstance(c, dict)]
    assert {c["model_version"] for c in parts} == {2}
    assert parts[-1]["usage"]["completion_tokens"] == long
    after = httpx.post(f"{gen_loop.api_url}/v1/chat/completions",
                       json={"messages": CHAT, "max_tokens": 4}, timeout=120)  # fmt: skip
    assert after.json()["model_version"] == 1
