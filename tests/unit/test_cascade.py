"""The cascade's decisions (``services.cascade``), with a labeler stand-in: who answers, both
budgets, an unavailable teacher, and the token signed over the label the user received."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from distillery.events import SampledPrediction, TeacherLabel
from distillery.settings import CascadeSettings, ServeSettings, Settings
from feedback.models import Prediction, PredictRequest
from feedback.tokens import sign, verify
from services.cascade import Cascade

SECRET = b"s" * 32
LABELS = ["negative", "positive"]


class FakeLabeler:
    """``answer.remote(events, train)``: the teacher says "positive" (0.9) after ``delay_s``;
    None per text when ``down``."""

    def __init__(self, delay_s: float = 0.0, down: bool = False) -> None:
        self.delay_s, self.down = delay_s, down
        self.calls: list[tuple[list[str], list[bool]]] = []
        self.answer = self

    def remote(self, events: list[SampledPrediction], train: list[bool]) -> Any:
        self.calls.append(([e.request_id for e in events], train))
        return self._answer(events)

    async def _answer(self, events: list[SampledPrediction]) -> list[TeacherLabel | None]:
        await asyncio.sleep(self.delay_s)
        if self.down:
            return [None] * len(events)
        return [_label(e) for e in events]


def _label(event: SampledPrediction) -> TeacherLabel:
    return TeacherLabel(
        request_id=event.request_id,
        text=event.text,
        labels=LABELS,
        teacher_logits=[-1.0, 1.0],
        teacher_probs=[0.1, 0.9],
        student_probs=event.student_probs,
        model_version=event.model_version,
        source_partition=0,
        source_offset=0,
        reason=event.reason,
        teacher_id="fake-teacher",
    )


def _cascade(labeler: Any, per_min: float = 600, timeout_ms: float = 200) -> Cascade:
    settings = Settings(
        serve=ServeSettings(num_replicas=1),
        cascade=CascadeSettings(per_min=per_min, timeout_ms=timeout_ms),
    )
    return Cascade(settings, SECRET, LABELS, find=lambda: labeler)


def _built(i: int, top: float) -> tuple[Prediction, SampledPrediction]:
    """The student says "negative" with probability ``top``."""
    rid = f"r{i}"
    prediction = Prediction(
        request_id=rid,
        label="negative",
        probabilities={"negative": top, "positive": 1 - top},
        model_version=3,
        feedback_token=sign(SECRET, rid, 3, "negative", "k1"),
    )
    event = SampledPrediction(
        request_id=rid, text=f"text {i}", student_probs=[top, 1 - top], model_version=3, key_id="k1"
    )
    return prediction, event


def _run(cascade: Cascade, built: list[Any], **body: Any) -> list[Any]:
    return asyncio.run(cascade.review_all(built, PredictRequest(text="x", **body)))


def test_a_sure_answer_stays_the_students_and_the_teacher_is_not_asked() -> None:
    labeler = FakeLabeler()
    (done,) = _run(_cascade(labeler), [_built(0, 0.95)], min_confidence=0.9)
    assert done.prediction.answered_by == "student" and done.prediction.deferral is None
    assert not done.labelled and labeler.calls == []


def test_an_unsure_answer_is_the_teachers_signed_over_its_label() -> None:
    labeler = FakeLabeler()
    sure, unsure = _run(_cascade(labeler), [_built(0, 0.95), _built(1, 0.6)], min_confidence=0.9)
    assert sure.prediction.answered_by == "student"
    answer = unsure.prediction
    assert (answer.answered_by, answer.deferred, answer.deferral) == ("teacher", True, "deferred")
    assert answer.label == "positive" and answer.probabilities == {"negative": 0.1, "positive": 0.9}
    assert answer.teacher_id == "fake-teacher" and answer.model_version == 3
    served = verify(SECRET, "r1", answer.feedback_token)
    assert served is not None and served.label == "positive" and served.key_id == "k1"
    assert unsure.labelled  # its label trains: the sampler must not send it again
    assert labeler.calls == [(["r1"], [True])]


def test_deferred_texts_of_one_moment_go_to_the_teacher_in_one_call() -> None:
    labeler = FakeLabeler()
    done = _run(_cascade(labeler), [_built(i, 0.6) for i in range(5)], min_confidence=0.9)
    assert all(d.prediction.answered_by == "teacher" for d in done)
    assert len(labeler.calls) == 1 and len(labeler.calls[0][0]) == 5


def test_an_opted_out_request_is_answered_but_its_label_does_not_train() -> None:
    labeler = FakeLabeler()
    (done,) = _run(_cascade(labeler), [_built(0, 0.6)], min_confidence=0.9, allow_training=False)
    assert done.prediction.answered_by == "teacher" and not done.labelled
    assert labeler.calls == [(["r0"], [False])]


def test_the_teacher_budget_per_minute_caps_deferrals() -> None:
    labeler = FakeLabeler()
    done = _run(_cascade(labeler, per_min=3), [_built(i, 0.6) for i in range(5)], min_confidence=1)
    reasons = [d.prediction.deferral for d in done]
    assert reasons.count("deferred") == 3 and reasons.count("teacher_budget") == 2
    spent = [d.prediction for d in done if d.prediction.deferral == "teacher_budget"]
    assert all(p.answered_by == "student" and not p.deferred for p in spent)
    assert all(p.label == "negative" for p in spent)


def test_a_slow_teacher_runs_out_the_latency_budget_and_the_student_answers() -> None:
    labeler = FakeLabeler(delay_s=0.5)
    cascade = _cascade(labeler, timeout_ms=1000)

    async def timed() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        built = [_built(0, 0.6)]
        body = PredictRequest(text="x", min_confidence=0.9, teacher_timeout_ms=50)
        done = await cascade.review_all(built, body)
        return done[0], loop.time() - start

    done, took = asyncio.run(timed())
    assert done.prediction.deferral == "latency_budget" and done.prediction.label == "negative"
    assert done.prediction.answered_by == "student" and not done.prediction.deferred
    assert took < 0.3  # the answer did not wait for the teacher
    assert done.labelled  # the labeler still sends the label it is working on


@pytest.mark.parametrize("labeler", [None, FakeLabeler(down=True)], ids=["no_labeler", "down"])
def test_an_unavailable_teacher_leaves_the_students_answer(labeler: Any) -> None:
    (done,) = _run(_cascade(labeler), [_built(0, 0.6)], min_confidence=0.9)
    assert done.prediction.deferral == "teacher_unavailable"
    assert done.prediction.answered_by == "student" and not done.labelled  # sample it as usual


def test_the_request_budget_never_exceeds_the_deployments() -> None:
    cascade = _cascade(FakeLabeler(), timeout_ms=300)
    assert cascade.timeout_s(None) == 0.3 and cascade.timeout_s(100) == 0.1
    assert cascade.timeout_s(10_000) == 0.3


def test_the_deployment_default_applies_and_zero_is_off() -> None:
    off = _cascade(FakeLabeler())
    assert off.threshold(None) == 0.0 and off.threshold(0.7) == 0.7
    settings = Settings(cascade=CascadeSettings(min_confidence=0.8))
    assert Cascade(settings, SECRET, LABELS, find=lambda: None).threshold(None) == 0.8
    assert CascadeSettings().answers_per_min(settings.teacher) == 600  # half of 1200 labels/min
