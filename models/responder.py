"""The teacher of a generative task: an LLM behind an OpenAI-compatible chat API writes the
reply to each prompt, and its text is what the student learns (sequence-level KD, Kim & Rush
2016; ``training.sequence_kd``).

The same client as the labelling teacher (``models.openai_api``): bounded concurrency, retries
with backoff that honour 429 and ``Retry-After``, the circuit breaker, and the token budget.
Greedy decoding (``temperature: 0``) so that a prompt has one answer, which the label cache can
keep: a repeated prompt never costs twice. An empty answer is unreadable (a dead letter).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from distillery.events import ChatTurn
from distillery.task import Generate
from models.openai_api import ChatAnswer, OpenAIChat, RequestRejected
from models.teacher import TeacherCost, TeacherHealth, prompt_hash

PROMPT_TEMPLATE_VERSION = 1


@dataclass(frozen=True)
class Response:
    """The teacher's reply to one prompt."""

    text: str
    finish_reason: str  # "stop" or "length" (cut at max_new_tokens)
    completion_tokens: int


@dataclass
class ResponseBatch:
    """Replies in prompt order; ``unreadable`` maps an index to the raw answer (no reply)."""

    responses: list[Response | None]
    unreadable: dict[int, str] = field(default_factory=dict)
    cost: TeacherCost = field(default_factory=TeacherCost)


@runtime_checkable
class Responder(Protocol):
    """What the labeler and the benchmarks need of a generative teacher."""

    @property
    def teacher_id(self) -> str: ...

    def respond(self, chats: list[list[ChatTurn]]) -> ResponseBatch: ...

    def health(self) -> TeacherHealth: ...


def responder_id(model: str, generate: Generate) -> str:
    """``llm-gen:<model>:<hash>``: the hash covers everything a reply depends on."""
    version = prompt_hash(
        PROMPT_TEMPLATE_VERSION, generate.system_prompt, generate.prompt_template,
        generate.max_new_tokens, list(generate.stop),
    )  # fmt: skip
    return f"llm-gen:{model}:{version}"


class LLMResponder:
    """Replies from an OpenAI-compatible endpoint, ``concurrency`` requests at a time."""

    def __init__(self, client: OpenAIChat, generate: Generate, concurrency: int = 2) -> None:
        self.client = client
        self.generate = generate
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="responder")
        self._id = responder_id(client.model, generate)

    @property
    def teacher_id(self) -> str:
        return self._id

    def health(self) -> TeacherHealth:
        return self.client.breaker.health()

    def ask(self, chat: list[ChatTurn]) -> ChatAnswer:
        """The reply to one chat (the task's system prompt, then the user's message, or the
        chat a served request carried)."""
        messages = [turn.model_dump() for turn in chat]
        params: dict[str, object] = {"max_tokens": self.generate.max_new_tokens, "temperature": 0}
        if self.generate.stop:
            params["stop"] = list(self.generate.stop)
        return self.client.chat(messages, **params)

    def respond(self, chats: list[list[ChatTurn]]) -> ResponseBatch:
        """Every chat's reply, in order. ``TeacherUnavailable`` propagates (the labeler keeps
        the batch); a chat the endpoint rejects, or an empty answer, is unreadable."""
        batch = ResponseBatch([None] * len(chats))
        for i, outcome in enumerate(self._pool.map(self._ask_or_rejected, chats)):
            if isinstance(outcome, str):
                batch.unreadable[i] = outcome
                continue
            _count(batch.cost, outcome)
            text = outcome.content.strip()
            if not text:
                batch.unreadable[i] = outcome.raw
                continue
            reason = outcome.finish_reason or "stop"
            batch.responses[i] = Response(text, reason, outcome.completion_tokens)
        return batch

    def _ask_or_rejected(self, chat: list[ChatTurn]) -> ChatAnswer | str:
        try:
            return self.ask(chat)
        except RequestRejected as exc:
            return f"rejected: {exc}"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _count(cost: TeacherCost, answer: ChatAnswer) -> None:
    cost.prompt_tokens += answer.prompt_tokens
    cost.completion_tokens += answer.completion_tokens
    cost.seconds += answer.seconds
    cost.requests += 1
    cost.retries += answer.retries
    cost.request_seconds.append(answer.seconds)
