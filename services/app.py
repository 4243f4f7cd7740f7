"""The Ray Serve application: a FastAPI ingress in front of the student, with dynamic batching.

A request's life: ``/v1/predict`` → ``_forward`` (``@serve.batch``) → answer with a signed
``feedback_token`` → the sampler sends a share to the teacher through Kafka, off the request path
(``services.sampling``). Feedback is acknowledged by the broker or spooled to disk before the 202
(``feedback.delivery``); feedback on an unsampled request recalls its text (``services.recall``).
The student is hot-swapped by ``reconfigure(user_config)``: the new weights load beside the old
ones and one reference switches, so no request fails and each answer names the version it used.
"""

import asyncio
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request, Response
from ray import serve

from distillery.actors import labeler_health_async
from distillery.contracts import CandidateSpec, StudentConfig, TeacherState, stage_key
from distillery.events import SampledPrediction
from distillery.metrics import serve_metrics
from distillery.settings import Settings
from distillery.task import load_task
from feedback.chat_models import ChatCompletion, ChatRequest
from feedback.models import (
    FeedbackAccepted,
    FeedbackRequest,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    Readiness,
    check_texts,
)
from feedback.tokens import load_secret
from models.generator import Generator, chat
from models.llama_decoder import served_generator
from models.student import Student
from services import answers as answering
from services import operator_api
from services.access import Access
from services.cascade import Cascade
from services.chat import ChatRoute, Pinned
from services.edge import (
    ERRORS,
    LeanAPI,
    body_schema,
    json_response,
    parse,
    within,
)
from services.feedback_route import FeedbackRoute
from services.recall import Recall
from services.sampling import Sampling
from services.slots import Slot, Variant, report_serving
from services.variants import VariantStats, report_forever
from training.model_store import ModelStore, local_copy

log = logging.getLogger(__name__)
api = LeanAPI(
    title="distillery",
    version="1",
    description="A student classifier that keeps learning from a teacher on live traffic.",
)
api.lean = {("POST", "/v1/predict"): "predict"}  # the hot route skips FastAPI's machinery
api.include_router(operator_api.router)


Answer = tuple[np.ndarray, int, float | None]  # probabilities (C,), version, novelty


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
        operator_api.configure(
            load_secret(
                self.settings.serve.operator_token, self.settings.paths.state_dir, "operator_token"
            )
        )
        self.metrics = serve_metrics()
        self.access = Access(self.settings)
        serve_cfg = self.settings.serve
        self.sampling = Sampling(self.settings, self.metrics)
        self.cascade = Cascade(self.settings, self.secret, self.task.label_names)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.feedback_route = FeedbackRoute(
            self.settings, self.access, self.secret, self.task.label_names, self.metrics,
            self.replica_id,
        )  # fmt: skip
        self.recall = Recall(
            self.settings.kafka, self.sampling.sampler.on_feedback, self.sampling.recalled
        )
        self.stats = VariantStats()
        generate = self.task.kind == "generate"
        self.chat = (
            ChatRoute(self.settings, self.task, self.secret, self.sampling.offer, self.stats.record)
            if generate
            else None
        )
        # Slot[Student] for a classify task, Slot[Generator] for a generate task (``_load``)
        self.stable: Slot[Any] = Slot(
            "stable", self._load, report_serving, self.metrics.swap_failed.inc
        )
        self.candidate: Slot[Any] = Slot(
            "candidate", self._load, None, self.metrics.swap_failed.inc
        )
        self.spec: CandidateSpec | None = None  # the rollout candidate, if any
        self.store: str | None = None  # the model store versions load from (None: "path")
        self._background: set[asyncio.Task[None]] = set()
        for batched in (self._forward, self._forward_candidate):
            method: Any = batched
            method.set_max_batch_size(serve_cfg.max_batch_size)
            method.set_batch_wait_timeout_s(serve_cfg.batch_wait_timeout_s)
        threading.Thread(
            target=report_forever,
            args=(self.stats, self.replica_id, self.settings.rollout.report_s),
            name="variants",
            daemon=True,
        ).start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config`` is a ``distillery.contracts.StudentConfig``: the stable version and
        its path, the model store (optional), and the rollout candidate (or None). With a store,
        a version loads from a local copy of the store's (on a replica on another node:
        downloaded once into ``paths.model_cache_dir``); without it, from its path.

        The first call (at start) loads at once. Later calls return at once and load a new
        version on a thread beside the old one (``services.slots``): Serve marks a replica not
        ready while ``reconfigure`` runs (ray issue 54509), so loading here would stall it.
        Promoting the candidate reuses its loaded weights; dropping it (a rollback) is instant.
        """
        config = StudentConfig.model_validate(user_config)
        version, path, spec = config.version, Path(config.path), config.candidate
        self.store = config.store
        ready = self.candidate.loaded
        if ready is not None and ready.version == version and self.stable.loaded is not None:
            self.stable.put(version, ready.student)  # the candidate is promoted
        self.spec = spec
        if spec is None:
            self.candidate.clear()
        else:
            self.candidate.want(spec.version, Path(spec.path))
        self.stats.start(None if spec is None else stage_key(spec.id, spec.stage))
        self.stable.want(version, path, wait=self.stable.loaded is None)

    def _variant(self) -> Variant[Any] | None:
        """The candidate, once the version the rollout names is loaded."""
        spec, ready = self.spec, self.candidate.loaded
        if spec is None or ready is None or ready.version != spec.version:
            return None
        return Variant(ready.student, ready.version, spec.stage, spec.share, spec.id)

    def _load(self, version: int, path: Path) -> Student | Generator:
        if self.store is not None:
            cache = self.settings.paths.model_cache_path()
            path = local_copy(ModelStore(self.store), version, cache)
        serve_cfg = self.settings.serve
        if self.task.kind == "generate":
            generator = served_generator(
                path, serve_cfg.generate_runtime, serve_cfg.generate_threads,
                self.settings.paths.data_dir, serve_cfg.generate_streams,
                self.metrics.decode_streams.observe,
            )  # fmt: skip
            generator.reply(chat("", "warm up"), 2)
            return generator
        student = Student.load(path, serve_cfg.max_tokens, serve_cfg.quantize)
        if student.labels != self.task.label_names:
            raise ValueError(
                f"student v{version} has labels {student.labels}, task has {self.task.label_names}"
            )
        student.predict_proba(["warm up"])
        return student

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _forward(self, texts: list[str]) -> list[Answer]:
        """Per text: (probabilities (C,), version, novelty or None)."""
        loaded = self.stable.loaded
        if loaded is None:
            raise RuntimeError("no student loaded yet")
        self.metrics.batch_size.observe(len(texts))
        self.metrics.batches.inc()
        probs, pooled = loaded.student.predict(texts)  # (B, C), (B, H)
        novelty = loaded.student.novelty(pooled)  # (B,) or None
        return [
            (row, loaded.version, None if novelty is None else float(novelty[i]))
            for i, row in enumerate(probs)
        ]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _forward_candidate(self, texts: list[str]) -> list[Answer]:
        """The rollout candidate's answers, batched apart from the stable student's."""
        variant = self._variant()
        if variant is None:
            raise RuntimeError("no candidate loaded")
        probs, _ = variant.student.predict(texts)  # (B, C)
        return [(row, variant.version, None) for row in probs]

    async def _timed(self, forward: Any, text: str, version: int) -> Answer | None:
        """``forward(text)``, its model latency and any error counted for the rollout; None if
        it failed."""
        start = time.perf_counter()
        try:
            answer: Answer = await forward(text)
        except Exception:
            log.exception("v%d failed a text", version)
            self.stats.record(version, 0.0, error=True)
            return None
        self.stats.record(answer[1], (time.perf_counter() - start) * 1000)
        return answer

    async def _route(self, text: str, client_key: str | None) -> Answer:
        """The canary's share of texts (sticky by ``client_key``) goes to the candidate; if it
        fails, the stable student answers, so a broken candidate costs users nothing."""
        variant = self._variant()
        if variant is not None and variant.answers(client_key):
            answer = await self._timed(self._forward_candidate, text, variant.version)
            if answer is not None:
                return answer
            self.metrics.candidate_errors.inc(tags={"stage": "canary"})
        stable = getattr(self.stable.loaded, "version", 0)
        answer = await self._timed(self._forward, text, stable)
        if answer is None:
            raise HTTPException(500, f"student v{stable} failed to answer")
        return answer

    def _after(self, text: str, probs: np.ndarray, event: SampledPrediction | None) -> None:
        """Mirror the text to a shadow candidate (off the request path), then sample it."""
        variant = self._variant()
        if variant is not None and variant.stage == "shadow" and random.random() < variant.share:
            task = asyncio.get_running_loop().create_task(self._mirror(variant, text, probs, event))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif event is not None:
            self.sampling.offer(event, canary=variant is not None and variant.stage == "canary")

    async def _mirror(
        self, variant: Variant, text: str, probs: np.ndarray, event: SampledPrediction | None
    ) -> None:
        answer = await self._timed(self._forward_candidate, text, variant.version)
        if answer is None:
            self.metrics.candidate_errors.inc(tags={"stage": "shadow"})
        else:
            shadow_probs, version, _ = answer
            agreed = int(shadow_probs.argmax()) == int(probs.argmax())
            self.stats.compare(agreed)
            self.metrics.shadow_compared.inc(tags={"agreed": str(agreed).lower()})
            if event is not None:
                update = {
                    "shadow_version": version,
                    "shadow_probs": [float(p) for p in shadow_probs],
                }
                event = event.model_copy(update=update)
        if event is not None:
            self.sampling.offer(event)

    @api.post(
        "/v1/predict",
        response_model=PredictResponse,
        openapi_extra=body_schema(PredictRequest),
        responses=ERRORS,
    )
    async def predict(self, request: Request) -> Response:
        """Label one text or a list; each answer carries its version and a feedback_token."""
        start = time.perf_counter()
        serve_cfg = self.settings.serve
        if self.chat is not None:
            raise HTTPException(
                404, f"task {self.task.name!r} is kind generate: POST /v1/chat/completions"
            )
        key_id = self._identify(request, "predict")
        body = await parse(request, PredictRequest, serve_cfg.max_body_bytes)
        texts = body.texts()
        reason = check_texts(texts, serve_cfg.max_items, serve_cfg.max_text_chars)
        if reason:
            self.metrics.rejected.inc(tags={"route": "predict", "status": "422"})
            raise HTTPException(status_code=422, detail=reason)
        if self.stable.loaded is None:
            raise HTTPException(503, "no student loaded yet", headers={"Retry-After": "5"})
        answers = await within(
            asyncio.gather(*(self._route(text, body.client_key) for text in texts)),
            serve_cfg.request_timeout_s,
            "prediction",
        )
        labels = self.task.label_names
        built = [
            answering.answer(labels, self.secret, t, *a, key_id)
            for t, a in zip(texts, answers, strict=True)
        ]
        reviewed = await self.cascade.review_all(built, body)
        for text, answer, (_, event), done in zip(texts, answers, built, reviewed, strict=True):
            if done.prediction.deferral is not None:
                self.metrics.cascade.inc(tags={"outcome": done.prediction.deferral})
            if not body.allow_training:
                self.metrics.skipped.inc(tags={"reason": "opt_out", "candidate": "none"})
            sample = body.allow_training and not done.labelled
            self._after(text, answer[0], event if sample else None)
        predictions = [r.prediction for r in reviewed]
        answering.count(self.metrics.predictions, predictions)
        self.metrics.latency_s.observe(time.perf_counter() - start)
        return json_response(PredictResponse(predictions=predictions))

    @api.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        openapi_extra=body_schema(ChatRequest),
        responses={**ERRORS, 404: {"description": "the task is not kind: generate"}},
    )
    async def chat_completions(self, request: Request) -> Response:
        """A generate task's reply (``services.chat``): OpenAI's chat completion, whole or
        streamed (``"stream": true``), with model_version, request_id and feedback_token."""
        if self.chat is None:
            raise HTTPException(404, f"task {self.task.name!r} is kind classify: POST /v1/predict")
        key_id = self._identify(request, "predict")
        return await self.chat.complete(request, self._pick_chat, key_id)

    def _pick_chat(self, user: str | None) -> Pinned | None:
        """Who answers a chat, pinned for its whole reply: the stable version, or during a
        canary, for its share of chats (sticky by ``user``), the candidate. During a shadow,
        a ``shadow_share`` of the stable version's chats name the candidate to mirror them."""
        loaded = self.stable.loaded
        if loaded is None:
            return None
        variant = self._variant()
        canary = variant is not None and variant.stage == "canary"
        shadow = None
        if variant is not None and variant.stage == "shadow" and random.random() < variant.share:
            shadow = Pinned(variant.student, variant.version)
        stable = Pinned(loaded.student, loaded.version, canary=canary, shadow=shadow)
        if variant is not None and variant.answers(user):
            return Pinned(variant.student, variant.version, canary=True, fallback=stable)
        return stable

    def _identify(self, request: Request, route: str) -> str:
        try:
            return self.access.identify(request, route)
        except HTTPException as exc:
            self.metrics.rejected.inc(tags={"route": route, "status": str(exc.status_code)})
            raise

    @api.post(
        "/v1/feedback",
        status_code=202,
        response_model=FeedbackAccepted,
        openapi_extra=body_schema(FeedbackRequest),
        responses={
            **ERRORS,
            403: {"description": "feedback_token not issued, issued to another key, or expired"},
        },
    )
    async def feedback(self, request: Request) -> Response:
        """A rating (1–5) and optionally the right label for an answer, with its feedback_token.

        The token is an HMAC over (request_id, model_version, label, API key, issue time) under
        the server's secret, so feedback on a request this service never answered, answered for
        another key, or answered longer ago than the join window is refused with 403. A key's
        repeated feedback on one request replaces its earlier one.
        """
        return await self.feedback_route.accept(request, self._identify(request, "feedback"))

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"description": "no student loaded yet"}})
    async def readyz(self) -> Readiness:
        """Ready: a student is loaded, and feedback can be kept: the broker is reachable, or
        feedback is being spooled to disk until it is back. The teacher's state is shown; a
        teacher that is down only delays labels, so it does not make the replica unready."""
        loaded = self.stable.loaded
        if loaded is None:
            raise HTTPException(503, "no student loaded yet", headers={"Retry-After": "5"})
        teacher = await labeler_health_async() or TeacherState(state="unknown")
        feedback = await self.feedback_route.readiness()
        return Readiness(model_version=loaded.version, teacher=teacher, **feedback.model_dump())

    @api.get("/v1/model")
    async def model(self) -> ModelInfo:
        version = getattr(self.stable.loaded, "version", None)
        return ModelInfo(task=self.task.name, labels=self.task.label_names, model_version=version)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Import path for Serve config deploys: ``services.app:app_builder``."""
    return StudentIngress.bind(args["settings"])  # type: ignore[attr-defined]
