"""The HTTP contract: request and response bodies of ``/v1/predict`` and ``/v1/feedback``, and
what ``/readyz`` and ``/v1/model`` answer.

Bounds that depend on settings (text length, items per request) are checked in ``check_texts`` so
the 422 names the field and the limit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from distillery.contracts import TeacherState

# What the cascade did with a text below min_confidence (``services.cascade``).
DeferralReason = Literal["deferred", "teacher_budget", "latency_budget", "teacher_unavailable"]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr | list[StrictStr] = Field(
        description="one text, or a list of texts answered in the same order"
    )
    allow_training: bool = Field(
        default=True,
        description="false: never send this request to the teacher or keep it for training",
    )
    client_key: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="during a canary, requests with the same key get the same student",
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="the cascade: a text whose student top probability is below this is answered "
        "by the teacher, within the budgets (default: the deployment's serve.min_confidence)",
    )
    teacher_timeout_ms: float | None = Field(
        default=None,
        gt=0.0,
        description="the most this request waits for the teacher, in ms; at most the "
        "deployment's serve.cascade_timeout_ms, which is also the default",
    )

    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


class Prediction(BaseModel):
    request_id: str
    label: str
    probabilities: dict[str, float] = Field(description="per label, summing to 1")
    model_version: int = Field(description="the student version that answered, or was asked")
    feedback_token: str = Field(description="send it back with feedback on this answer")
    answered_by: Literal["student", "teacher"] = "student"
    deferred: bool = Field(default=False, description="the cascade handed this text to the teacher")
    deferral: DeferralReason | None = Field(
        default=None,
        description="why the cascade did or did not defer a text below min_confidence: "
        "deferred, teacher_budget (per minute, spent), latency_budget (the teacher took too "
        "long), teacher_unavailable",
    )
    teacher_id: str | None = Field(default=None, description="the teacher that answered")


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: StrictStr = Field(min_length=1, max_length=200)
    feedback_token: StrictStr = Field(
        min_length=1, max_length=400, description="the token returned with the prediction"
    )
    rating: int = Field(ge=1, le=5, description="1 (bad) … 5 (good)")
    corrected_label: StrictStr | None = Field(
        default=None, max_length=200, description="the right label, one of the task's labels"
    )
    corrected_reply: StrictStr | None = Field(
        default=None, min_length=1, max_length=4_000, description="generate: the right reply"
    )


class AdminAction(BaseModel):
    """Body of the operator routes ``/v1/admin/{promote,rollback,pause,resume}``."""

    model_config = ConfigDict(extra="forbid")

    reason: StrictStr = Field(
        default="operator", min_length=1, max_length=500, description="kept in the history"
    )
    version: int | None = Field(
        default=None, ge=1, description="promote: this version (default: the rollout's candidate)"
    )


class FeedbackAccepted(BaseModel):
    request_id: str
    status: str = "accepted"


class FeedbackReadiness(BaseModel):
    """Whether feedback can be kept now: sent to the broker, or spooled on the replica's disk."""

    broker: Literal["reachable", "unreachable"]
    feedback: Literal["direct", "spooling"]
    spool_pending_bytes: int  # spooled and not yet acknowledged by the broker
    spool_quarantined: int  # torn or unreadable spool lines set aside


class Readiness(FeedbackReadiness):
    """``GET /readyz`` of a replica that has a student loaded (before that: 503)."""

    status: Literal["ready"] = "ready"
    model_version: int
    teacher: TeacherState


class ModelInfo(BaseModel):
    """``GET /v1/model``: the task, its labels in order, the version this replica serves."""

    task: str
    labels: list[str]
    model_version: int | None


def check_texts(texts: list[str], max_items: int, max_chars: int) -> str | None:
    """A reason naming the field if the texts break a bound, else None."""
    if not texts:
        return "text: must hold at least one text"
    if len(texts) > max_items:
        return f"text: {len(texts)} texts in one request, the limit is {max_items}"
    for i, text in enumerate(texts):
        where = "text" if len(texts) == 1 else f"text[{i}]"
        if not text.strip():
            return f"{where}: empty or whitespace-only text"
        if len(text) > max_chars:
            return f"{where}: {len(text)} characters, the limit is {max_chars}"
    return None
