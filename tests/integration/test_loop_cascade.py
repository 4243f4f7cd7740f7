"""The cascade on the running loop (``services.cascade``): texts below ``min_confidence`` are
answered by the real teacher through the labeler actor, join the label stream instead of the
sampled one, and fall back to the student when a budget runs out.

The shared loop samples every answer it can afford (``sample_rate=1``): a deferred text must
reach neither the sampled topic nor the labels topic twice."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from cli.launcher import Running
from distillery import bus
from distillery.events import SampledPrediction, TeacherLabel, Topics, decode

pytestmark = pytest.mark.integration


def _predict(loop: Running, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(f"{loop.api_url}/v1/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def _ids(loop: Running, topic: str, kind: Any) -> dict[str, Any]:
    return {
        (event := decode(kind, r.value)).request_id: event
        for r in bus.read_all(loop.settings.kafka, topic)
    }


def _labels_for(loop: Running, ids: set[str], timeout_s: float = 60) -> dict[str, TeacherLabel]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, TeacherLabel] = {}
    while time.monotonic() < deadline:
        found = {k: v for k, v in _ids(loop, Topics.LABELS, TeacherLabel).items() if k in ids}
        if len(found) == len(ids):
            break
        time.sleep(1)
    return found


def test_unsure_texts_are_answered_by_the_teacher_and_train_without_being_sampled(
    loop: Running,
) -> None:
    texts = ["What a wonderful, heartfelt film.", "Terrible acting and a boring plot."]
    sure = _predict(loop, {"text": texts, "min_confidence": 0.0})
    unsure = _predict(loop, {"text": texts, "min_confidence": 1.0})
    assert all(p["answered_by"] == "student" and p["deferral"] is None for p in sure)
    for text in texts:
        _unsure(loop, text)
    for answer in unsure:
        assert answer["answered_by"] == "teacher" and answer["deferred"], answer
        assert answer["deferral"] == "deferred" and answer["teacher_id"]
        assert answer["model_version"] >= 1
    # the teacher answers these two plainly: its labels, not a copy of the student's
    assert [p["label"] for p in unsure] == ["positive", "negative"]
    deferred = {p["request_id"] for p in unsure}
    labels = _labels_for(loop, deferred)
    assert set(labels) == deferred, "a deferred text's teacher label never reached the stream"
    for answer in unsure:
        label = labels[answer["request_id"]]
        assert label.reason == "deferred" and label.teacher_id == answer["teacher_id"]
        assert label.teacher_probs[1] == pytest.approx(answer["probabilities"]["positive"])
    sampled = _ids(loop, Topics.SAMPLED, SampledPrediction)
    assert not deferred & set(sampled)  # deferred: labelled once, never sampled again
    labelled = [
        decode(TeacherLabel, r.value).request_id
        for r in bus.read_all(loop.settings.kafka, Topics.LABELS)
    ]
    assert all(labelled.count(rid) == 1 for rid in deferred)
    # feedback on a teacher's answer is accepted against the label the user received
    body = {
        "request_id": unsure[0]["request_id"],
        "feedback_token": unsure[0]["feedback_token"],
        "rating": 5,
    }
    response = httpx.post(f"{loop.api_url}/v1/feedback", json=body, timeout=30)
    assert response.status_code == 202, response.text


def _unsure(loop: Running, text: str) -> None:
    """Skip past a text the student is certain of (top probability 1.0 in float32 is not below
    ``min_confidence`` 1.0): CI met one, a trained student's answer to a plain sentence."""
    (answer,) = _predict(loop, {"text": text, "min_confidence": 0.0})
    if max(answer["probabilities"].values()) >= 1.0:
        pytest.skip(f"the student is certain of {text!r}")


def test_an_opted_out_text_is_answered_by_the_teacher_but_never_kept(loop: Running) -> None:
    text = "It was fine, I suppose, though I might not go again."
    _unsure(loop, text)
    (answer,) = _predict(loop, {"text": text, "min_confidence": 1.0, "allow_training": False})
    assert answer["answered_by"] == "teacher", answer
    time.sleep(3)  # the labeler would have sent its label by now
    assert answer["request_id"] not in _ids(loop, Topics.LABELS, TeacherLabel)
    assert answer["request_id"] not in _ids(loop, Topics.SAMPLED, SampledPrediction)


def test_past_the_latency_budget_the_student_answers_and_the_label_still_trains(
    loop: Running,
) -> None:
    text = "An odd little film, neither good nor bad."
    _unsure(loop, text)
    (answer,) = _predict(loop, {"text": text, "min_confidence": 1.0, "teacher_timeout_ms": 0.01})
    assert answer["answered_by"] == "student" and not answer["deferred"]
    assert answer["deferral"] == "latency_budget"
    # the teacher was asked: its late label is kept for training, and the text is not resampled
    assert set(_labels_for(loop, {answer["request_id"]})) == {answer["request_id"]}
    assert answer["request_id"] not in _ids(loop, Topics.SAMPLED, SampledPrediction)


def test_the_teacher_budget_per_minute_bounds_deferrals_and_the_student_answers_the_rest(
    loop: Running,
) -> None:
    """The shared loop's cascade budget: ``cascade.per_min`` for the deployment, so at most
    that many (plus the refill while the test runs) are deferred from a burst of 192 texts."""
    per_min = loop.settings.cascade.per_min
    assert per_min is not None
    start = time.monotonic()
    answers = [
        p
        for i in range(3)
        for p in _predict(
            loop, {"text": [f"burst {i}-{k}: so-so" for k in range(64)], "min_confidence": 1.0}
        )
    ]
    refill = per_min * (time.monotonic() - start) / 60
    reasons = [p["deferral"] for p in answers]
    assert set(reasons) <= {"deferred", "teacher_budget", "latency_budget"}, set(reasons)
    assert reasons.count("teacher_budget") >= len(answers) - per_min - refill - 1
    assert reasons.count("deferred") + reasons.count("latency_budget") <= per_min + refill + 1
    assert reasons.count("deferred") >= 1
    for answer in answers:
        by = "teacher" if answer["deferral"] == "deferred" else "student"
        assert answer["answered_by"] == by and answer["deferred"] == (by == "teacher")
    deadline = time.monotonic() + 30  # Ray exports replica metrics every 10 s
    text = ""
    while time.monotonic() < deadline and 'outcome="teacher_budget"' not in text:
        text = httpx.get(loop.metrics_url, timeout=10).text
        time.sleep(2)
    assert "distillery_cascade_total{" in text and 'outcome="teacher_budget"' in text
