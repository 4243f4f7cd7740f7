"""The teacher contract: every backend (embedding zero-shot, an LLM over HTTP, an ensemble of
them) answers a batch of texts with soft labels in the task's label order, says what it cost,
and how healthy it is. The labeler, the bootstrap and the benchmarks see only this ``Protocol``.

A backend that cannot read its model's answer for one text does not raise: it names the text in
``TeacherBatch.unreadable`` with the raw answer, and the labeler dead-letters it. A backend that
cannot reach its model at all raises ``TeacherUnavailable``: the labeler then waits, commits
nothing, and the sampled events stay on their topic until the teacher is back.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from distillery.contracts import TeacherState

BreakerState = Literal["closed", "open", "half_open"]


class TeacherUnavailable(RuntimeError):
    """The teacher cannot be reached now (its circuit breaker is open, or every retry failed);
    ``retry_in_s`` is when it is worth trying again."""

    def __init__(self, message: str, retry_in_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_in_s = retry_in_s


@dataclass
class TeacherCost:
    """What one ``label`` call cost. Tokens are those the endpoint reported (``usage``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    request_seconds: list[float] = field(default_factory=list)  # one per HTTP request

    def add(self, other: TeacherCost) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds
        self.requests += other.requests
        self.retries += other.retries
        self.cache_hits += other.cache_hits
        self.request_seconds += other.request_seconds


@dataclass(frozen=True)
class MemberProbs:
    """An ensemble member's own answer within a batch: probs (B, C), readable (B,) bool."""

    teacher_id: str
    probs: np.ndarray  # (B, C)
    readable: np.ndarray  # (B,)


@dataclass
class TeacherBatch:
    """A teacher's answer for B texts over C labels.

    probs (B, C) sum to 1 per row; logits (B, C) are log-probabilities up to a constant per row
    (an embedding teacher's cosine / temperature, an LLM's renormalised log-probabilities);
    states (B, H) are sentence embeddings for the hidden-state loss, or None; ``unreadable``
    maps a row index to the raw answer that could not be read (that row's probs are meaningless);
    ``members`` (an ensemble's) keeps each member's own answer, for measuring it against people.
    """

    probs: np.ndarray  # (B, C)
    logits: np.ndarray  # (B, C)
    states: np.ndarray | None = None  # (B, H)
    unreadable: dict[int, str] = field(default_factory=dict)
    cost: TeacherCost = field(default_factory=TeacherCost)
    members: tuple[MemberProbs, ...] = ()  # an ensemble's members, each with its own answer

    def __len__(self) -> int:
        return int(self.probs.shape[0])


SHOWN: dict[str, Literal["up", "down", "probing"]] = {
    "closed": "up", "open": "down", "half_open": "probing",
}  # fmt: skip


class TeacherHealth(BaseModel):
    """Shown by ``/readyz``, ``status`` and the metrics."""

    model_config = ConfigDict(frozen=True)

    teacher_id: str
    state: BreakerState = "closed"
    since: float = 0.0
    consecutive_failures: int = 0
    last_error: str | None = None

    @property
    def up(self) -> bool:
        return self.state != "open"

    def public(self) -> TeacherState:
        """As ``/readyz`` and ``status`` show it: state up, down (breaker open) or probing."""
        shown = SHOWN[self.state]
        return TeacherState(
            state=shown, teacher_id=self.teacher_id, since=self.since, last_error=self.last_error
        )


@runtime_checkable
class Teacher(Protocol):
    """Soft labels for texts, in the task's label order."""

    @property
    def teacher_id(self) -> str:
        """Stable name of the model and its prompt version: labels with another id came from
        another teacher."""
        ...

    @property
    def has_states(self) -> bool:
        """True if ``label(..., with_states=True)`` returns sentence embeddings."""
        ...

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        """Soft labels for ``texts``; raises ``TeacherUnavailable`` if the model is unreachable."""
        ...

    def health(self) -> TeacherHealth: ...


@runtime_checkable
class Remixable(Protocol):
    """A teacher made of members whose mix can follow measured shares (``models.ensemble``)."""

    def reweigh(self, shares: Mapping[str, float]) -> dict[str, float]:
        """Mix the members by ``shares`` (member teacher_id → share) from now on, or by their
        configured weights where the shares give none; returns the weights now in use."""
        ...


def prompt_hash(*parts: object) -> str:
    """Eight hex digits naming a prompt version: what a teacher's answers depend on."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, (B, C) → (B, C)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result


def always_up(teacher_id: str) -> TeacherHealth:
    """The health of an in-process teacher: it is up whenever this process is."""
    return TeacherHealth(teacher_id=teacher_id, state="closed", since=time.time())
