"""The running loop on a real local Ray and the real embedded broker: serve → sample → label,
feedback → topic, bad input → 4xx, metrics scrapeable, a round → registry → hot swap under load."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from cli.launcher import Running
from distillery import bus
from distillery.events import FeedbackEvent, TeacherLabel, Topics, decode
from monitoring.status import Status
from training.registry import Registry

pytestmark = pytest.mark.integration


def _predict(running: Running, text: Any) -> httpx.Response:
    return httpx.post(f"{running.api_url}/v1/predict", json={"text": text}, timeout=30)


def test_prediction_is_sampled_then_labelled_by_the_teacher(loop: Running) -> None:
    answer = _predict(loop, "What a wonderful, heartfelt film.").json()["predictions"][0]
    assert answer["model_version"] == 1
    assert set(answer["probabilities"]) == {"negative", "positive"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        labels = [
            decode(TeacherLabel, r.value) for r in bus.read_all(loop.settings.kafka, Topics.LABELS)
        ]
        mine = [lab for lab in labels if lab.request_id == answer["request_id"]]
        if mine:
            break
        time.sleep(1)
    assert mine, "the sampled prediction never got a teacher label"
    assert mine[0].teacher_probs[1] > 0.5
    assert mine[0].model_version == 1


def test_feedback_reaches_its_topic_with_the_served_label(loop: Running) -> None:
    answer = _predict(loop, "Terrible acting and a boring plot.").json()["predictions"][0]
    body = {
        "request_id": answer["request_id"],
        "feedback_token": answer["feedback_token"],
        "rating": 1,
        "corrected_label": "negative",
    }
    response = httpx.post(f"{loop.api_url}/v1/feedback", json=body, timeout=30)
    assert response.status_code == 202, response.text
    events = [
        decode(FeedbackEvent, r.value) for r in bus.read_all(loop.settings.kafka, Topics.FEEDBACK)
    ]
    mine = [e for e in events if e.request_id == answer["request_id"]]
    assert len(mine) == 1
    assert mine[0].predicted_label == answer["label"]
    assert mine[0].corrected_label == "negative"


def _token(loop: Running) -> dict[str, Any]:
    answer = _predict(loop, "fine").json()["predictions"][0]
    return {"request_id": answer["request_id"], "feedback_token": answer["feedback_token"]}


@pytest.mark.parametrize(
    ("route", "body", "status", "field"),
    [
        ("predict", {"text": ""}, 422, "text"),
        ("predict", {"text": "   "}, 422, "text"),
        ("predict", {"text": 5}, 422, "text"),
        ("predict", {"text": ["ok", 7]}, 422, "text"),
        ("predict", {"text": "x" * 2001}, 422, "2000"),
        ("predict", {"text": ["ok"] * 65}, 422, "64"),
        ("predict", {"txt": "ok"}, 422, "txt"),
        ("feedback", {"rating": 9}, 422, "rating"),
        ("feedback", {"rating": 2, "corrected_label": "neutral"}, 422, "corrected_label"),
        ("feedback", {"rating": 2, "request_id": "never-issued"}, 403, "feedback_token"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(
    loop: Running, route: str, body: dict[str, Any], status: int, field: str
) -> None:
    if route == "feedback":
        body = {**_token(loop), **body}
    response = httpx.post(f"{loop.api_url}/v1/{route}", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert field in response.text


def test_body_over_the_limit_gets_413_naming_the_limit(loop: Running) -> None:
    limit = loop.settings.serve.max_body_bytes
    body = b'{"text": "' + b"x" * limit + b'"}'
    response = httpx.post(
        f"{loop.api_url}/v1/predict",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert str(limit) in response.text


def test_invalid_json_gets_422(loop: Running) -> None:
    response = httpx.post(
        f"{loop.api_url}/v1/predict",
        content=b'{"text": ',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "json" in response.text.lower()


def test_live_ready_and_openapi_document_the_contract(loop: Running) -> None:
    assert httpx.get(f"{loop.api_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{loop.api_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["broker"] == "reachable"
    schema = httpx.get(f"{loop.api_url}/openapi.json", timeout=10).json()
    predict = schema["paths"]["/v1/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert "text" in body["properties"]
    assert {"413", "422", "503"} <= set(predict["responses"])
    feedback = schema["paths"]["/v1/feedback"]["post"]
    assert "403" in feedback["responses"]
    assert "feedback_token" in json.dumps(feedback["requestBody"])
    assert "HMAC" in feedback["description"]
    assert httpx.get(f"{loop.api_url}/docs", timeout=10).status_code == 200


def test_metrics_are_scrapeable_from_rays_export_port(loop: Running) -> None:
    _predict(loop, ["good", "bad"])
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(loop.metrics_url, timeout=10).text
        if "distillery_predictions_total" in text and "distillery_teacher_labels_total" in text:
            break
        time.sleep(2)
    assert "distillery_predictions_total" in text
    assert "distillery_teacher_labels_total" in text


def test_round_registers_a_version_and_hot_swaps_with_no_failed_request(loop: Running) -> None:
    import ray

    for i in range(6):  # fresh texts for the round's recent window and its holdout
        batch = [f"sample {i}.{j}: a {('great', 'awful')[j % 2]} movie" for j in range(16)]
        _predict(loop, batch)
    time.sleep(5)  # labeler + store flush
    outcomes: Counter[str] = Counter()
    versions: list[tuple[float, int]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=loop.api_url, timeout=30) as client:
            while not stop.is_set():
                n = next(sent)
                text = f"review {n}: " + ("a great movie", "an awful, boring movie")[n % 2]
                try:
                    r = client.post("/v1/predict", json={"text": text})
                    outcomes[str(r.status_code)] += 1
                    versions.append((time.monotonic(), r.json()["predictions"][0]["model_version"]))
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

    sent = itertools.count()  # each request a text of its own
    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for c in clients:
        c.start()
    report = ray.get(loop.scheduler.retrain.remote("integration test"))
    assert report.outcome == "shadow", report  # the gate passed: shadow → canary → full
    swapped_at = _wait_promoted(loop, report.version)
    time.sleep(3)
    stop.set()
    for c in clients:
        c.join()
    assert set(outcomes) == {"200"}, outcomes
    seen = {v for _, v in versions}
    assert seen == {1, 2}, seen
    assert all(v == 2 for t, v in versions if t > swapped_at + 0.05)
    registry = Registry(loop.settings.paths.registry_dir)
    assert registry.current() == 2
    meta = registry.get(2)
    assert meta.lineage.parent == 1
    assert Topics.LABELS in meta.lineage.offsets
    assert meta.gate is not None and meta.gate.passed
    assert set(meta.online) == {"shadow", "canary"}  # each stage's verdict, with its checks
    events = [e.event for e in registry.history() if e.version == 2]
    assert events == ["registered", "shadow", "canary", "promoted"]


def _wait_promoted(loop: Running, version: int, timeout_s: float = 120) -> float:
    """Wait until ``version`` is current and every replica answers with it."""
    import ray

    registry = Registry(loop.settings.paths.registry_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ray.get(loop.scheduler.status.remote())
        if registry.current() == version:
            if set(status.replicas.values()) == {version}:
                return time.monotonic()
        else:
            assert registry.rollout() is not None, registry.history()[-3:]
        time.sleep(0.5)
    raise AssertionError(f"v{version} not promoted after {timeout_s}s: {registry.history()[-3:]}")


def test_status_reports_version_labels_and_drift(loop: Running) -> None:
    import ray

    # traffic after v2's window, so that a drift check measures against v2's training window;
    # both sentiments: a column constant and equal in both windows is left out of Evidently's
    # report (monitoring.drift), and with one-sided traffic the predicted label once was (stop 28)
    sent = 6 * 8
    kinds = ("a film I would watch again", "a dull film I would never watch again")
    for chunk in range(6):  # within the teacher budget's burst
        _predict(loop, [f"traffic {chunk}-{i}: {kinds[i % 2]}" for i in range(8)])
        time.sleep(0.5)
    deadline = time.monotonic() + 90
    status: Status | None = None
    while time.monotonic() < deadline:
        status = ray.get(loop.scheduler.status.remote())
        assert status is not None
        new_labels = status.signals.new_labels if status.signals else 0
        labelled = min(status.labels_since_last_round, new_labels) >= sent
        if status.drift and status.drift.version == status.current_version and labelled:
            break
        time.sleep(2)
    assert status is not None and status.current_version is not None
    assert status.current_version >= 2
    assert set(status.replicas.values()) == {status.current_version}
    assert len(status.replicas) == loop.settings.serve.num_replicas
    assert status.labels_since_last_round >= sent, status.labels_since_last_round
    assert status.last_round is not None and status.last_round.version == 2
    drift = status.drift
    assert drift is not None
    assert set(drift.share) == {"features", "embedding", "prediction"}
    assert all(0.0 <= share <= 1.0 for share in drift.share.values())
    assert drift.version == status.current_version
    assert status.signals is not None and status.signals.new_labels >= sent, status.signals
    assert status.trigger is not None and status.trigger.reason  # decided on every tick
    reports = httpx.get(f"{loop.api_url}/v1/reports", timeout=10).json()["reports"]
    assert reports and reports[0]["url"] == f"/v1/reports/{reports[0]['name']}"
    html = httpx.get(f"{loop.api_url}{reports[0]['url']}", timeout=30)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert all(column in html.text for column in ("char_length", "pc1", "predicted_label"))
    missing = httpx.get(f"{loop.api_url}/v1/reports/drift-19700101T000000Z.html", timeout=10)
    assert missing.status_code == 404 and "/v1/reports" in missing.json()["detail"]
    assert httpx.get(f"{loop.api_url}/v1/reports/..%2Fregistry", timeout=10).status_code == 404


def test_three_promotions_under_load_fail_nothing_and_answer_promoted_versions(
    loop: Running,
) -> None:
    import ray

    from bench.swap import check, copies, windows

    registry = Registry(loop.settings.paths.registry_dir)
    answers: list[tuple[float, float, int, int | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=loop.api_url, timeout=30) as client:
            while not stop.is_set():
                start = time.time()
                try:
                    r = client.post("/v1/predict", json={"text": "steady traffic"})
                    version = r.json()["predictions"][0]["model_version"] if r.is_success else None
                    answers.append((start, time.time(), r.status_code, version))
                except httpx.HTTPError:
                    answers.append((start, time.time(), 0, None))

    clients = [threading.Thread(target=hammer) for _ in range(8)]
    for c in clients:
        c.start()
    swaps = []
    for version in copies(registry, 3, loop.settings.paths.model_cache_path()):
        time.sleep(1)
        swaps.append(ray.get(loop.scheduler.promote.remote(version, "integration test")))
    time.sleep(1)
    stop.set()
    for c in clients:
        c.join()
    assert [a for a in answers if a[2] != 200] == []
    history = [e.model_dump() for e in registry.history()]
    assert check(answers, windows(history, [s.model_dump() for s in swaps])) == []
    assert {a[3] for a in answers} >= {s.version for s in swaps}
    assert answers[-1][3] == swaps[-1].version


def _wait_mode(loop: Running, headers: dict[str, str], status: int, timeout_s: float = 20) -> None:
    """Until every replica answers ``status`` to a predict with ``headers`` (the key file is
    re-read every 2 s per replica)."""
    deadline, seen = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        code = httpx.post(
            f"{loop.api_url}/v1/predict", json={"text": "ok"}, headers=headers, timeout=30
        ).status_code
        seen = seen + 1 if code == status else 0
        if seen >= 6:  # several in a row: both replicas agree
            return
        time.sleep(0.3)
    raise AssertionError(f"predict with {list(headers)} never settled on {status}")


def test_api_keys_bind_tokens_and_revoking_the_last_reopens(loop: Running) -> None:
    """With a key in state/keys.json the running replicas ask for keys (401 without), a token
    answers only the key it was issued to (403 names both), a key's feedback carries its id,
    and once every key is revoked the loopback API is open again, without a restart."""
    from feedback import keys

    state = loop.settings.paths.state_dir
    a, key_a = keys.create(state, "app-a")
    b, key_b = keys.create(state, "app-b")
    as_a, as_b = {"Authorization": f"Bearer {key_a}"}, {"X-API-Key": key_b}
    try:
        _wait_mode(loop, {}, 401)
        answer = httpx.post(
            f"{loop.api_url}/v1/predict", json={"text": "great"}, headers=as_a, timeout=30
        ).json()["predictions"][0]
        assert answer["feedback_token"].split(".")[1] == a.id
        body = {k: answer[k] for k in ("request_id", "feedback_token")} | {"rating": 1}
        stolen = httpx.post(f"{loop.api_url}/v1/feedback", json=body, headers=as_b, timeout=30)
        assert stolen.status_code == 403
        assert stolen.json()["detail"] == (
            f"feedback_token: issued to API key {a.id}, not to {b.id}"
        )
        for rating in (1, 5):  # the same key twice: both kept, the reads keep the latest
            own = httpx.post(
                f"{loop.api_url}/v1/feedback", json=body | {"rating": rating}, headers=as_a,
                timeout=30,
            )  # fmt: skip
            assert own.status_code == 202, own.text
        events = [
            decode(FeedbackEvent, r.value)
            for r in bus.read_all(loop.settings.kafka, Topics.FEEDBACK)
        ]
        mine = [e for e in events if e.request_id == answer["request_id"]]
        assert [(e.key_id, e.rating) for e in mine] == [(a.id, 1), (a.id, 5)]
    finally:
        for record in (a, b):
            keys.update(state, record.id, revoked=time.time())
    _wait_mode(loop, {}, 200)
