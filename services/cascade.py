"""The cascade: the teacher answers the texts the student is unsure of, within two budgets.

A text whose student top probability is below the request's ``min_confidence`` (default
``cascade.min_confidence``; 0 turns the cascade off) is handed to the teacher through the labeler
actor (``services.labeler.Labeler.answer``), batched with the other replicas' deferred texts of
the same few milliseconds. The answer says who answered (``answered_by``), the student version
asked, and the teacher's id; its feedback token is signed over the label the user received.

Deferral is bounded, so an answer never stalls behind a slow teacher:

- a teacher budget per minute (``cascade.per_min``, split evenly over the replicas, each a
  ``TokenBucket``); once spent, the student answers with ``deferral="teacher_budget"``;
- a latency budget per request (``teacher_timeout_ms``, at most ``cascade.timeout_ms``); past it
  the student answers with ``deferral="latency_budget"``;
- a teacher that is down (its breaker open, or no labeler actor): ``"teacher_unavailable"``.

The teacher's label is also a training label: the labeler sends it to the labels topic with
``reason="deferred"`` (unless the request opted out of training), so a deferred text is not
sampled again and spends no sampling budget. Deferred labels are not uniform draws, so the
unbiased held-out estimates (``reason == "uniform"``) never include them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distillery.actors import find_labeler
from distillery.events import SampledPrediction, TeacherLabel
from distillery.settings import Settings
from feedback.models import DeferralReason, Prediction, PredictRequest
from feedback.tokens import sign
from services.sampling import TokenBucket

log = logging.getLogger(__name__)
WAIT_S = 0.002  # how long the first deferred text waits for others to share its labeler call


@dataclass(frozen=True)
class Outcome:
    """What the teacher did with one deferred text: its label when ``reason == "deferred"``;
    ``labelled``: its label is on its way to the training stream, so do not sample the text."""

    reason: DeferralReason
    label: TeacherLabel | None = None
    labelled: bool = False


@dataclass(frozen=True)
class Reviewed:
    """One answer after the cascade: the prediction the user gets, and whether the text's
    teacher label already joins the training stream."""

    prediction: Prediction
    labelled: bool = False


class Cascade:
    """One replica's cascade: its share of the teacher budget, and the batched labeler call."""

    def __init__(
        self,
        settings: Settings,
        secret: bytes,
        labels: list[str],
        find: Callable[[], Any] = find_labeler,
    ) -> None:
        cfg = settings.cascade
        self.default = cfg.min_confidence
        self.max_timeout_s = cfg.timeout_s(settings.teacher)
        per_replica = cfg.answers_per_min(settings.teacher) / settings.serve.num_replicas
        self.bucket = TokenBucket(per_replica)
        self.secret = secret
        self.labels = labels
        self._find = find
        self._labeler: Any = None
        self._batch: list[tuple[SampledPrediction, bool, asyncio.Future[Any]]] = []
        self._max_batch = cfg.max_batch_size
        self._calls: set[asyncio.Task[None]] = set()

    def threshold(self, requested: float | None) -> float:
        return self.default if requested is None else requested

    def timeout_s(self, requested_ms: float | None) -> float:
        """The request's latency budget: its own, never above the deployment's."""
        if requested_ms is None:
            return self.max_timeout_s
        return min(requested_ms / 1000, self.max_timeout_s)

    async def review_all(
        self, built: list[tuple[Prediction, SampledPrediction]], body: PredictRequest
    ) -> list[Reviewed]:
        """Each answer of a request after the cascade, in order; no await when every text is
        at or above the threshold (the hot path, with the cascade off)."""
        at = self.threshold(body.min_confidence)
        if all(max(event.student_probs) >= at for _, event in built):
            return [Reviewed(prediction) for prediction, _ in built]
        timeout_s = self.timeout_s(body.teacher_timeout_ms)
        train = body.allow_training
        return list(
            await asyncio.gather(*(self.review(p, e, at, timeout_s, train) for p, e in built))
        )

    async def review(
        self,
        prediction: Prediction,
        event: SampledPrediction,
        at: float,
        timeout_s: float,
        train: bool,
    ) -> Reviewed:
        """``prediction`` as the user gets it: the teacher's answer if the student's top
        probability is below ``at`` and both budgets allow, else the student's, with the reason."""
        if max(event.student_probs) >= at:
            return Reviewed(prediction)
        outcome = await self.defer(
            event.model_copy(update={"reason": "deferred"}), train, timeout_s
        )
        if outcome.label is None:
            return Reviewed(
                prediction.model_copy(update={"deferral": outcome.reason}), outcome.labelled
            )
        probs = outcome.label.teacher_probs  # (C,) in task label order
        label = self.labels[max(range(len(probs)), key=probs.__getitem__)]
        key_id = event.key_id or ""
        token = sign(self.secret, prediction.request_id, prediction.model_version, label, key_id)
        answered = prediction.model_copy(
            update={
                "label": label,
                "probabilities": dict(zip(self.labels, map(float, probs), strict=True)),
                "answered_by": "teacher",
                "deferred": True,
                "deferral": "deferred",
                "teacher_id": outcome.label.teacher_id,
                "feedback_token": token,
            }
        )
        return Reviewed(answered, outcome.labelled)

    async def defer(self, event: SampledPrediction, train: bool, timeout_s: float) -> Outcome:
        """Ask the teacher for ``event``'s label within ``timeout_s``, if the budget allows."""
        if not self.bucket.take():
            return Outcome("teacher_budget")
        asked = self._ask(event, train)
        try:
            label = await asyncio.wait_for(asyncio.shield(asked), timeout_s)
        except TimeoutError:
            return Outcome("latency_budget", labelled=train)  # the labeler still sends it
        except Exception as exc:
            log.warning("cascade: the teacher could not be asked: %s", exc)
            return Outcome("teacher_unavailable")
        if label is None:
            return Outcome("teacher_unavailable")
        return Outcome("deferred", label, labelled=train)

    def _ask(self, event: SampledPrediction, train: bool) -> asyncio.Future[Any]:
        """The teacher's label for ``event``, asked in one labeler call with the texts deferred
        within the same ``WAIT_S`` (or the first ``max_batch_size`` of them)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        answer.add_done_callback(_consume)  # an answer that comes too late is dropped quietly
        self._batch.append((event, train, answer))
        if len(self._batch) == 1:
            loop.call_later(WAIT_S, self._flush)
        elif len(self._batch) >= self._max_batch:
            self._flush()
        return answer

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.ensure_future(self._ask_teacher(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _ask_teacher(
        self, batch: list[tuple[SampledPrediction, bool, asyncio.Future[Any]]]
    ) -> None:
        """One labeler call for a batch; each text's future gets its label (None: unavailable)."""
        try:
            if self._labeler is None:
                self._labeler = self._find()
            if self._labeler is None:
                answers: list[TeacherLabel | None] = [None] * len(batch)
            else:
                events, train = [e for e, _, _ in batch], [t for _, t, _ in batch]
                answers = await self._labeler.answer.remote(events, train)
        except Exception as exc:
            self._labeler = None  # found again on the next call
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), label in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(label)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
