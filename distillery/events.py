"""Wire contracts: every Kafka topic and event, versioned, shared by producers and consumers.

Events travel as UTF-8 JSON. Each carries ``schema_version``; a consumer that meets a payload it
cannot parse, or a version it does not know, sends it to the dead-letter topic (``decode``).
"""

from __future__ import annotations

import base64
import time
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
# deferred: the cascade asked the teacher to answer the text (``services.cascade``)
SampleReason = Literal["uniform", "low_margin", "novel", "feedback", "relabel", "deferred"]


class Topics:
    """Topic names. The suffix is the schema major version."""

    SAMPLED = "distillery.traffic.sampled.v1"
    FEEDBACK = "distillery.feedback.v1"
    LABELS = "distillery.labels.v1"
    DEAD_LETTER = "distillery.deadletter.v1"

    ALL = (SAMPLED, FEEDBACK, LABELS, DEAD_LETTER)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    request_id: str = Field(min_length=1, max_length=200)
    ts: float = Field(default_factory=time.time, description="Unix time, seconds")


class ChatTurn(BaseModel):
    """One message of a chat (a ``kind: generate`` task), as the OpenAI chat API carries it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class MemberAnswer(BaseModel):
    """One ensemble member's own soft label for a text, carried beside the mixed one so that each
    member's agreement with people can be measured and the round can mix them again by it
    (``feedback.ensemble_trust``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher_id: str = Field(min_length=1, max_length=200)
    probs: list[float]  # (C,) in task label order


class SampledPrediction(Event):
    """A served prediction chosen for the teacher (topic ``SAMPLED``). For a generate task,
    ``text`` is the user's last message, ``messages`` the whole chat the student answered and
    ``reply`` its answer; ``student_probs`` is empty."""

    text: str
    student_probs: list[float]  # (C,) in task label order
    model_version: int
    reason: SampleReason = "uniform"
    novelty: float | None = Field(
        default=None, description="distance to the training window, in units of its 95th pct"
    )
    shadow_version: int | None = Field(
        default=None, description="a candidate in shadow that answered the same text, unseen"
    )
    shadow_probs: list[float] | None = None  # (C,) that candidate's answer
    shadow_reply: str | None = Field(
        default=None, description="generate: that candidate's reply to the same chat, unseen"
    )
    key_id: str | None = Field(
        default=None, max_length=64, description="the API key's id (``open`` in open mode)"
    )
    messages: list[ChatTurn] | None = Field(default=None, description="generate: the chat")
    reply: str | None = Field(default=None, description="generate: the student's reply")


class FeedbackEvent(Event):
    """A user's rating of one served answer, maybe with the right label (topic ``FEEDBACK``)."""

    rating: int = Field(ge=1, le=5)
    corrected_label: str | None = None
    corrected_reply: str | None = Field(default=None, description="generate: the right reply")
    predicted_label: str
    model_version: int
    key_id: str | None = Field(
        default=None, max_length=64, description="the API key's id; None on older events"
    )


class TeacherLabel(Event):
    """The teacher's soft label for one sampled prediction (topic ``LABELS``)."""

    text: str
    labels: list[str]  # task label names, the order of every vector below
    teacher_logits: list[float]  # (C,) log-probabilities up to a constant (cosine / T, LLM)
    teacher_probs: list[float]  # (C,) softmax of teacher_logits
    student_probs: list[float]  # (C,) the served student's answer
    model_version: int
    source_partition: int
    source_offset: int
    predicted_at: float | None = Field(default=None, description="the prediction's Unix time")
    reason: SampleReason = "uniform"
    shadow_version: int | None = None
    shadow_probs: list[float] | None = None  # (C,) the shadow candidate's unseen answer
    shadow_reply: str | None = Field(
        default=None, description="generate: the shadow candidate's unseen reply"
    )
    teacher_embedding: list[float] | None = Field(
        default=None, description="(H_t,) the teacher's sentence state, for hidden-state loss"
    )
    teacher_id: str | None = Field(
        default=None,
        max_length=200,
        description="the teacher and prompt version that gave this label (lineage); None on "
        "labels written before teachers were named",
    )
    members: list[MemberAnswer] | None = Field(
        default=None, description="an ensemble: each member that read the text, its own answer"
    )
    reply: str | None = Field(default=None, description="generate: the teacher's reply")
    student_reply: str | None = Field(default=None, description="generate: the served reply")
    messages: list[ChatTurn] | None = Field(default=None, description="generate: the chat")


class DeadLetter(BaseModel):
    """A message no consumer could use, with the reason and the original bytes (base64)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    payload_b64: str
    ts: float = Field(default_factory=time.time)

    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


E = TypeVar("E", bound=BaseModel)


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


class DecodeError(ValueError):
    """A payload that is not a valid event of the expected type and version."""


def decode(model: type[E], raw: bytes) -> E:
    """Parse ``raw`` as ``model``; raise ``DecodeError`` with a one-line reason otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        if where == "schema_version":
            raise DecodeError(
                f"{model.__name__}: unknown schema_version {first['input']!r} "
                f"(this consumer reads {SCHEMA_VERSION})"
            ) from exc
        raise DecodeError(f"{model.__name__}: {where}: {first['msg']}") from exc


def dead_letter(topic: str, partition: int, offset: int, reason: str, raw: bytes) -> DeadLetter:
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason,
        payload_b64=base64.b64encode(raw).decode(),
    )
