"""Build the configured ``Teacher`` (and check it at start-up), or just name it.

The start-up checks of an LLM teacher, each failing with a message that names what is wrong:
the task file has an instruction; the URL answers ``GET /v1/models`` as an OpenAI-compatible
server and serves the model; the labels' answers begin with distinct first tokens (by the
server's tokenizer when it has a tokenize route, else by their spelling); and a probe answer
carries logprobs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distillery.settings import TeacherSettings
from distillery.task import Task
from models.embedding_teacher import EmbeddingTeacher, embedding_teacher_id
from models.ensemble import EnsembleTeacher, ensemble_id
from models.gguf import GGUF_MODEL_ID
from models.label_cache import CachedResponder, CachedTeacher, LabelCache
from models.llm_teacher import (
    LLMOptions,
    LLMTeacher,
    TaskFileError,
    answers,
    check_first_tokens,
    check_prefixes,
    llm_teacher_id,
    system_prompt,
)
from models.openai_api import EndpointMismatch, OpenAIChat, tokenizer_of
from models.resilience import Budget, CircuitBreaker
from models.responder import LLMResponder, Responder, responder_id
from models.teacher import Teacher
from models.weights import teacher_model_path

log = logging.getLogger(__name__)


def embedding_name(cfg: TeacherSettings) -> str:
    return cfg.model_path.name if cfg.model_path is not None else cfg.model


def embedding_teacher(cfg: TeacherSettings, task: Task) -> EmbeddingTeacher:
    return EmbeddingTeacher(
        embedding_name(cfg),
        teacher_model_path(cfg),
        task.prompts,
        cfg.temperature,
        cfg.max_tokens,
    )


def llm_model_name(cfg: TeacherSettings, client: OpenAIChat | None = None) -> str:
    """``llm_model``; else the local server's; else the one model the endpoint lists."""
    if cfg.llm_model:
        return cfg.llm_model
    if cfg.url is None:
        return GGUF_MODEL_ID
    if client is None:
        raise ValueError("llm_model is unset: the endpoint must be asked which model it serves")
    served = client.served_models()
    if len(served) != 1:
        raise EndpointMismatch(
            f"teacher URL {client.base} serves {served}: set DISTILLERY_TEACHER_LLM_MODEL to one"
        )
    return served[0]


def _client(cfg: TeacherSettings, model: str, teacher_id: str) -> OpenAIChat:
    if cfg.url is None:
        raise ValueError(
            "the llm teacher has no URL: set DISTILLERY_TEACHER_URL, or start it through "
            "`distillery up`, which starts the local llama.cpp server"
        )
    return OpenAIChat(
        cfg.url,
        model,
        CircuitBreaker(teacher_id, cfg.breaker_failures, cfg.breaker_reset_s),
        Budget(None, cfg.tokens_per_min),
        api_key=cfg.api_key_value(),
        timeout_s=cfg.timeout_s,
        concurrency=cfg.concurrency,
        max_retries=cfg.max_retries,
        backoff_base_s=cfg.backoff_s,
        backoff_cap_s=cfg.backoff_max_s,
    )


def _checked_model(cfg: TeacherSettings) -> str:
    """The model to ask for, once the URL has answered as an OpenAI API that serves it."""
    probe = _client(cfg, cfg.llm_model or "?", "probe")
    try:
        model = llm_model_name(cfg, probe)
        served = probe.served_models()
        if served and model not in served:
            raise EndpointMismatch(f"teacher URL {probe.base} serves {served}, not {model!r}")
    finally:
        probe.close()
    return model


def llm_responder(cfg: TeacherSettings, task: Task) -> LLMResponder:
    """The teacher of a ``kind: generate`` task, after the endpoint checks ``llm_teacher``
    makes (the URL answers, it serves the model)."""
    if task.generate is None:
        raise TaskFileError(f"task {task.name!r} is kind {task.kind!r}: it has no replies to ask")
    model = _checked_model(cfg)
    client = _client(cfg, model, responder_id(model, task.generate))
    return LLMResponder(client, task.generate, cfg.concurrency)


def llm_teacher(cfg: TeacherSettings, task: Task) -> LLMTeacher:
    """An LLM teacher that passed every start-up check."""
    system_prompt(task)  # the task file can drive an LLM at all
    model = _checked_model(cfg)
    client = _client(cfg, model, llm_teacher_id(model, task))
    first_token = tokenizer_of(client)
    said = answers(task)
    if first_token is not None:
        check_first_tokens(said, first_token)
    else:
        log.info("teacher: %s has no tokenize route; answers checked by spelling", client.base)
        check_prefixes(said)
    teacher = LLMTeacher(client, task, cfg.concurrency, LLMOptions(top_logprobs=cfg.top_logprobs))
    if not teacher.ask("A test sentence.").top_logprobs:
        raise EndpointMismatch(
            f"teacher URL {client.base} ({model}) returns no logprobs: soft labels need "
            "'logprobs: true, top_logprobs' on /v1/chat/completions"
        )
    if task.calibrate:
        log.info("teacher: content-free prior %s", teacher.calibrate().round(3).tolist())
    return teacher


def labeler_teacher(
    cfg: TeacherSettings, task: Task, cache_dir: Path | None = None
) -> Teacher | Responder:
    """What the labeler asks: ``build_teacher``, or a generate task's LLM responder."""
    if task.kind != "generate":
        return build_teacher(cfg, task, cache_dir)
    if cfg.kind != "llm":
        raise ValueError(
            f"task {task.name!r} is kind generate: its teacher writes replies, so it must be "
            f"an LLM (DISTILLERY_TEACHER_KIND=llm), got {cfg.kind!r}"
        )
    responder = llm_responder(cfg, task)
    if cfg.cache and cache_dir is not None:
        return CachedResponder(responder, LabelCache(cache_dir / "teacher-cache.sqlite"))
    return responder


def build_teacher(cfg: TeacherSettings, task: Task, cache_dir: Path | None = None) -> Teacher:
    """The configured teacher; an LLM (alone or in an ensemble) behind the label cache."""
    if cfg.kind == "embedding":
        return embedding_teacher(cfg, task)
    llm: Teacher = llm_teacher(cfg, task)
    if cfg.cache and cache_dir is not None:
        llm = CachedTeacher(llm, LabelCache(cache_dir / "teacher-cache.sqlite"))
    if cfg.kind == "llm":
        return llm
    weights = task.ensemble or {"llm": 0.5, "embedding": 0.5}
    members: list[tuple[Teacher, float]] = [(llm, weights.get("llm", 0.0))]
    members.append((embedding_teacher(cfg, task), weights.get("embedding", 0.0)))
    return EnsembleTeacher([(t, w) for t, w in members if w > 0])


def seed_teacher(cfg: TeacherSettings, task: Task, cache_dir: Path | None = None) -> Teacher:
    """The teacher that labels the seed slice (``seed_teacher``)."""
    use_embedding = cfg.seed_teacher == "embedding" or (
        cfg.seed_teacher == "auto" and cfg.kind != "embedding"
    )
    return embedding_teacher(cfg, task) if use_embedding else build_teacher(cfg, task, cache_dir)


def configured_teacher_id(cfg: TeacherSettings, task: Task) -> str | None:
    """The id the configured teacher's labels carry, without loading or calling it; None for an
    endpoint whose model name only the endpoint knows (``llm_model`` unset)."""
    embedding_id = embedding_teacher_id(
        embedding_name(cfg), task.prompts, cfg.temperature, cfg.max_tokens
    )
    if cfg.kind == "embedding":
        return embedding_id
    if cfg.url is not None and not cfg.llm_model:
        return None
    if task.generate is not None:
        return responder_id(llm_model_name(cfg), task.generate)
    llm_id = llm_teacher_id(llm_model_name(cfg), task)
    if cfg.kind == "llm":
        return llm_id
    weights = task.ensemble or {"llm": 0.5, "embedding": 0.5}
    ids = [(llm_id, weights.get("llm", 0.0)), (embedding_id, weights.get("embedding", 0.0))]
    return ensemble_id([(i, w) for i, w in ids if w > 0])
