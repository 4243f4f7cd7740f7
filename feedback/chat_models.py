"""The HTTP contract of ``POST /v1/chat/completions`` (a ``kind: generate`` task): OpenAI's chat
completion request and response, so that an application points its OpenAI client at the student,
plus three fields on every answer: ``model_version``, ``request_id`` and ``feedback_token``.

OpenAI's sampling fields are accepted (an OpenAI client sends them) and honoured where the
student can: ``temperature`` 0, the default here, is greedy; above 0 the reply is sampled, with
``top_p``. ``n`` must be 1. A field OpenAI does not define is refused (422, naming it), as is a
chat that does not end with the user's message. Bounds that depend on settings (messages per
chat, characters, ``max_tokens``) are checked in ``check_chat`` so the 422 names the limit.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from distillery.events import ChatTurn
from models.generator import Finish


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatTurn] = Field(min_length=1, description="the chat, ending with the user")
    model: StrictStr | None = Field(default=None, description="ignored: the student answers")
    max_tokens: int | None = Field(default=None, ge=1, description="the reply's token bound")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="max_tokens' alias")
    stream: bool = Field(default=False, description="server-sent events, one per token")
    stop: StrictStr | list[StrictStr] | None = Field(default=None, description="up to 4 strings")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: Literal[1] = 1
    seed: int | None = None
    user: StrictStr | None = Field(default=None, max_length=200)
    stream_options: dict[str, bool] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="ignored")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="ignored")
    min_tokens: int = Field(default=0, ge=0, description="vLLM's: no end of turn before this")
    allow_training: bool = Field(
        default=True, description="false: never send this chat to the teacher or keep it"
    )

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_bound(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


def check_chat(body: ChatRequest, max_messages: int, max_chars: int, max_tokens: int) -> str | None:
    """A reason naming the field if the chat breaks a bound, else None."""
    if len(body.messages) > max_messages:
        return f"messages: {len(body.messages)} messages, the limit is {max_messages}"
    last = body.messages[-1].role
    if last != "user":
        return f"messages[-1].role: the chat must end with the user's message, got {last!r}"
    for i, turn in enumerate(body.messages):
        if not turn.content.strip():
            return f"messages[{i}].content: empty or whitespace-only"
        if len(turn.content) > max_chars:
            return (
                f"messages[{i}].content: {len(turn.content)} characters, the limit is {max_chars}"
            )
    for name, value in (
        ("max_tokens", body.max_tokens),
        ("max_completion_tokens", body.max_completion_tokens),
    ):
        if value is not None and value > max_tokens:
            return f"{name}: {value}, the limit is {max_tokens}"
    stops = body.stops()
    if len(stops) > 4 or any(not s for s in stops):
        return f"stop: at most 4 non-empty strings, got {stops}"
    return None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: Finish


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Answered(BaseModel):
    """What every answer and every streamed chunk carries beyond OpenAI's fields."""

    id: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str = Field(description="student-v<model_version>")
    model_version: int = Field(description="the student version that wrote the whole reply")
    request_id: str
    feedback_token: str | None = Field(
        default=None, description="send it back with feedback; on a stream, in the last chunk"
    )


class ChatCompletion(Answered):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Finish | None = None


class ChatCompletionChunk(Answered):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None
