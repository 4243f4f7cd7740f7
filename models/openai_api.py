"""One home for the OpenAI-compatible HTTP API a teacher LLM sits behind (OpenAI, vLLM,
llama.cpp's server, Ollama, TGI): ``GET /v1/models`` and ``POST /v1/chat/completions``.

Every call is bounded: at most ``concurrency`` requests in flight, each with a timeout; 429,
5xx, timeouts and refused connections are retried with jittered backoff that honours
``Retry-After``; consecutive failures open the circuit breaker, and while it is open calls fail
at once with ``TeacherUnavailable``. A request the endpoint rejects as such (400, 413, 422...)
raises ``RequestRejected``, which is about that one input, not the endpoint. The API key is
sent as a bearer token and appears in no log line, error or repr.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from models.resilience import Budget, CircuitBreaker, backoff_s, parse_retry_after
from models.teacher import TeacherUnavailable

log = logging.getLogger(__name__)
RETRIED_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
ENDPOINT_DOWN_STATUS = {401, 403, 404}  # every request will fail alike: the breaker counts it


class RequestRejected(ValueError):
    """The endpoint refused this one request (status and the start of its body)."""


class EndpointMismatch(RuntimeError):
    """The URL answers, but not as an OpenAI-compatible server serving the model."""


class EndpointUnreachable(EndpointMismatch):
    """The URL does not answer at all (yet): worth waiting for, unlike a mismatch."""


@dataclass
class ChatAnswer:
    """The parts of a chat completion a teacher reads."""

    content: str
    top_logprobs: list[tuple[str, float]]  # the first answer token's alternatives
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    retries: int
    raw: str  # the body, for a dead letter when the answer cannot be read
    finish_reason: str | None = None  # "stop", "length"...: why the answer ended


def api_base(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` → ``http://host:port/v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class OpenAIChat:
    """A thread-safe client for one endpoint and model."""

    def __init__(
        self,
        url: str,
        model: str,
        breaker: CircuitBreaker,
        budget: Budget,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        concurrency: int = 2,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.base = api_base(url)
        self.model = model
        self.breaker = breaker
        self.budget = budget
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._slots = threading.BoundedSemaphore(concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(headers=headers, timeout=timeout_s, limits=limits)
        self.stopping = threading.Event()

    def __repr__(self) -> str:
        return f"OpenAIChat({self.base!r}, model={self.model!r})"

    def close(self) -> None:
        self.stopping.set()
        self._http.close()

    def served_models(self) -> list[str]:
        """The ids ``GET /v1/models`` lists; ``EndpointMismatch`` if it is not that API."""
        url = f"{self.base}/models"
        try:
            response = self._http.get(url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise EndpointUnreachable(f"teacher URL {url}: no answer ({exc})") from exc
        if response.status_code != 200:
            raise EndpointMismatch(
                f"teacher URL {url} answered {response.status_code}: {response.text[:200]!r}"
            )
        try:
            data = response.json()["data"]
            return [str(entry["id"]) for entry in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EndpointMismatch(
                f"teacher URL {url} is not an OpenAI-compatible API (GET /v1/models gave "
                f"{response.text[:200]!r}, expected {{'data': [{{'id': ...}}]}})"
            ) from exc

    def chat(self, messages: list[dict[str, str]], **params: Any) -> ChatAnswer:
        """One chat completion, retried as the module says."""
        body = {"model": self.model, "messages": messages, **params}
        retries = 0
        while True:
            wait = self.breaker.allow()
            if wait > 0:
                raise TeacherUnavailable(
                    f"teacher breaker open: {self.breaker.health().last_error}", wait
                )
            self.budget.acquire(self.stopping.is_set)
            retry_after, error = self._attempt_or_reason(body)
            if isinstance(retry_after, ChatAnswer):
                retry_after.retries = retries
                return retry_after
            if retries >= self.max_retries or self.stopping.is_set():
                raise TeacherUnavailable(f"teacher failed {retries + 1} times: {error}", 1.0)
            delay = backoff_s(retries, self.backoff_base_s, self.backoff_cap_s, retry_after)
            log.info("teacher: %s; retry %d in %.1fs", error, retries + 1, delay)
            retries += 1
            self.stopping.wait(delay)

    def _attempt_or_reason(self, body: dict[str, Any]) -> tuple[Any, str]:
        """(the answer, "") on success, else (Retry-After seconds or None, the reason)."""
        start = time.perf_counter()
        try:
            with self._slots:
                response = self._http.post(f"{self.base}/chat/completions", json=body)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__} after {time.perf_counter() - start:.1f}s"
            self.breaker.failed(reason)
            return None, reason
        seconds = time.perf_counter() - start
        status = response.status_code
        if status == 200:
            answer = _read_answer(response.text, seconds)
            self.breaker.succeeded()
            self.budget.settle(answer.prompt_tokens + answer.completion_tokens)
            return answer, ""
        reason = f"HTTP {status}: {response.text[:200]!r}"
        if status == 429:  # throttled, not down: back off without opening the breaker
            return parse_retry_after(response.headers.get("retry-after")), reason
        if status in ENDPOINT_DOWN_STATUS:
            self.breaker.failed(reason)
            raise TeacherUnavailable(f"teacher endpoint refuses every request: {reason}", 5.0)
        if status in RETRIED_STATUS:
            self.breaker.failed(reason)
            return parse_retry_after(response.headers.get("retry-after")), reason
        self.breaker.succeeded()  # it answered: the endpoint is up, this input is the problem
        raise RequestRejected(reason)


def _read_answer(text: str, seconds: float) -> ChatAnswer:
    """The answer's text and first-token alternatives; a body of another shape keeps the raw
    text and no alternatives (the teacher then calls the answer unreadable)."""
    try:
        body = json.loads(text)
        choice = body["choices"][0]
        content = str(choice.get("message", {}).get("content") or "")
        usage = body.get("usage") or {}
        tokens = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
        alternatives = [
            (str(entry["token"]), float(entry["logprob"]))
            for entry in tokens.get("top_logprobs") or []
        ]
        return ChatAnswer(
            content=content,
            top_logprobs=alternatives,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            retries=0,
            raw=text[:2_000],
            finish_reason=choice.get("finish_reason"),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ChatAnswer("", [], 0, 0, seconds, 0, text[:2_000])


def tokenizer_of(client: OpenAIChat) -> Any:
    """``text → first token id`` through the server's own tokenizer, or None when it has no
    tokenize route. Tried: llama-cpp-python's ``/extras/tokenize``, llama.cpp's and vLLM's
    ``/tokenize`` (none is part of the OpenAI API, so a hosted endpoint has none)."""
    root = client.base.removesuffix("/v1")
    routes = [
        (f"{root}/extras/tokenize", lambda text: {"input": text, "model": client.model}),
        (f"{root}/tokenize", lambda text: {"content": text, "prompt": text, "model": client.model}),
    ]
    for url, body in routes:
        try:
            response = client._http.post(url, json=body("probe"), timeout=10.0)
            response.raise_for_status()
            tokens = response.json()["tokens"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            continue
        if tokens and isinstance(tokens[0], int):

            def first(text: str, url: str = url, body: Any = body) -> int:
                answer = client._http.post(url, json=body(text), timeout=10.0)
                answer.raise_for_status()
                return int(answer.json()["tokens"][0])

            return first
    return None
