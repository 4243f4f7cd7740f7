"""The Ray Serve application: a FastAPI ingress in front of the student, with dynamic batching.

A request's life: ``/v1/predict`` → ``_forward`` (``@serve.batch``) → answer with a signed
``feedback_token`` → the sampler sends a share to the teacher through Kafka, off the request path.
The student is hot-swapped by ``reconfigure(user_config)``: the new weights load beside the old
ones and one reference switches, so no request fails and each answer names the version it used.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from ray import serve

from distillery.events import FeedbackEvent, SampledPrediction, Topics
from distillery.settings import Settings
from distillery.task import load_task
from feedback.models import (
    FeedbackAccepted,
    FeedbackRequest,
    Prediction,
    PredictRequest,
    PredictResponse,
    check_texts,
)
from feedback.tokens import load_secret, sign, verify
from monitoring.metrics import serve_metrics
from services.sampling import Publisher, Sampler
from services.student import Student

api = FastAPI(
    title="distillery",
    version="1",
    description="A student classifier that keeps learning from a teacher on live traffic.",
)


@dataclass(frozen=True)
class Loaded:
    student: Student
    version: int


@serve.deployment(name="StudentIngress")
@serve.ingress(api)
class StudentIngress:
    def __init__(self, settings: dict[str, Any]) -> None:
        import torch

        torch.set_num_threads(1)
        self.settings = Settings.model_validate(settings)
        self.task = load_task(self.settings.paths.task_file)
        self.secret = load_secret(
            self.settings.serve.feedback_secret, self.settings.paths.state_dir
        )
        self.metrics = serve_metrics()
        serve_cfg = self.settings.serve
        self.sampler = Sampler(serve_cfg.sample_rate, serve_cfg.unsampled_cache_size)
        self.publisher = Publisher(
            self.settings.kafka,
            serve_cfg.sample_queue_size,
            on_drop=lambda reason: self.metrics.sample_dropped.inc(tags={"reason": reason}),
        )
        self.loaded: Loaded | None = None
        batched: Any = self._forward
        batched.set_max_batch_size(serve_cfg.max_batch_size)
        batched.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """user_config = {"version": N, "path": model folder}: load beside, then switch."""
        version = int(user_config["version"])
        if self.loaded is not None and self.loaded.version == version:
            return
        student = Student.load(Path(user_config["path"]), self.settings.serve.max_tokens)
        if student.labels != self.task.label_names:
            raise ValueError(
                f"student v{version} has labels {student.labels}, task has {self.task.label_names}"
            )
        self.loaded = Loaded(student, version)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _forward(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        loaded = self.loaded
        if loaded is None:
            raise RuntimeError("no student loaded yet")
        probs = loaded.student.predict_proba(texts)  # (B, C)
        return [(row, loaded.version) for row in probs]

    @api.post("/v1/predict", response_model=PredictResponse)
    async def predict(self, body: PredictRequest) -> PredictResponse:
        start = time.perf_counter()
        texts = body.texts()
        reason = check_texts(
            texts, self.settings.serve.max_items, self.settings.serve.max_text_chars
        )
        if reason:
            self.metrics.rejected.inc(tags={"route": "predict", "status": "422"})
            raise HTTPException(status_code=422, detail=reason)
        if self.loaded is None:
            raise HTTPException(503, "no student loaded yet", headers={"Retry-After": "5"})
        answers = await asyncio.gather(*(self._forward(text) for text in texts))
        predictions = [
            self._answer(text, probs, version, body.allow_training)
            for text, (probs, version) in zip(texts, answers, strict=True)
        ]
        self.metrics.latency_ms.observe((time.perf_counter() - start) * 1000)
        return PredictResponse(predictions=predictions)

    def _answer(self, text: str, probs: np.ndarray, version: int, sample: bool) -> Prediction:
        request_id = uuid.uuid4().hex
        label = self.task.label_names[int(probs.argmax())]
        self.metrics.predictions.inc(tags={"model_version": str(version)})
        if sample:
            event = SampledPrediction(
                request_id=request_id,
                text=text,
                student_probs=[float(p) for p in probs],
                model_version=version,
            )
            if self.sampler.decide(event) and self.publisher.offer(
                Topics.SAMPLED, event, request_id
            ):
                self.metrics.sampled.inc(tags={"reason": "uniform"})
        return Prediction(
            request_id=request_id,
            label=label,
            probabilities=dict(zip(self.task.label_names, map(float, probs), strict=True)),
            model_version=version,
            feedback_token=sign(self.secret, request_id, version, label),
        )

    @api.post("/v1/feedback", status_code=202, response_model=FeedbackAccepted)
    async def feedback(self, body: FeedbackRequest) -> FeedbackAccepted:
        served = verify(self.secret, body.request_id, body.feedback_token)
        if served is None:
            self.metrics.rejected.inc(tags={"route": "feedback", "status": "403"})
            raise HTTPException(
                403, "feedback_token: not a token this service issued for request_id"
            )
        if body.corrected_label is not None and body.corrected_label not in self.task.label_names:
            raise HTTPException(
                422,
                f"corrected_label: {body.corrected_label!r} is not one of {self.task.label_names}",
            )
        event = FeedbackEvent(
            request_id=body.request_id,
            rating=body.rating,
            corrected_label=body.corrected_label,
            predicted_label=served.label,
            model_version=served.model_version,
        )
        unsampled = self.sampler.on_feedback(body.request_id)
        if unsampled is not None and self.publisher.offer(
            Topics.SAMPLED, unsampled, body.request_id
        ):
            self.metrics.sampled.inc(tags={"reason": "feedback"})
        try:
            await asyncio.to_thread(
                self.publisher.send_and_wait,
                Topics.FEEDBACK,
                event,
                body.request_id,
                self.settings.kafka.send_timeout_s,
            )
        except Exception as exc:
            raise HTTPException(
                503, f"feedback not stored, try again: {type(exc).__name__}", {"Retry-After": "5"}
            ) from exc
        self.metrics.feedback.inc(tags={"rating": str(body.rating)})
        return FeedbackAccepted(request_id=body.request_id)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> dict[str, Any]:
        if self.loaded is None:
            raise HTTPException(503, "no student loaded yet", headers={"Retry-After": "5"})
        return {"status": "ready", "model_version": self.loaded.version}

    @api.get("/v1/status")
    async def status(self) -> dict[str, Any]:
        """The scheduler's view: current version, versions, labels since the last round, drift."""
        import ray

        from monitoring.scheduler import ACTOR_NAME, NAMESPACE

        try:
            scheduler = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
            result: dict[str, Any] = await scheduler.status.remote()
        except Exception as exc:
            raise HTTPException(503, f"scheduler unavailable: {exc}", {"Retry-After": "5"}) from exc
        return result

    @api.get("/v1/model")
    async def model(self) -> dict[str, Any]:
        version = None if self.loaded is None else self.loaded.version
        return {"task": self.task.name, "labels": self.task.label_names, "model_version": version}


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Import path for Serve config deploys: ``services.app:app_builder``."""
    return StudentIngress.bind(args["settings"])  # type: ignore[attr-defined]
