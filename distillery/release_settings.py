"""When a candidate reaches users: the promotion gate's and the rollout's settings, one
validated class each (re-exported by ``distillery.settings``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from distillery.loop_settings import env_prefix


class GateSettings(BaseSettings):
    """The promotion gate: every check compares the candidate with the current student on the
    same held-out rows; the candidate may be at most the given margin worse on each."""

    model_config = env_prefix("GATE_")

    agreement_margin: float = Field(default=0.02, ge=0, le=1)
    correction_margin: float = Field(default=0.02, ge=0, le=1)
    min_golden_rows: int = Field(
        default=30, ge=1, description="the golden-set check needs this many human labels"
    )
    referee: Literal["auto", "teacher", "human"] = Field(
        default="auto",
        description="auto: the human labels judge (teacher agreement only where the teacher "
        "is still trusted; slices and ECE are not checked) where the teacher is measurably "
        "worse than a student on them",
    )
    trusted_teacher_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="under the human referee, teacher agreement counts on held-out rows whose "
        "teacher weight is at least this",
    )
    confidence_z: float = Field(
        default=1.64,
        ge=0,
        description="agreement, slice and golden checks fail only beyond this many paired "
        "standard errors of the difference (0: point values)",
    )
    slice_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="teacher agreement per input-length slice may drop this much plus "
        "confidence_z paired standard errors on the slice's rows",
    )
    min_slice_rows: int = Field(default=50, ge=1, description="smaller slices are not checked")
    ece_margin: float = Field(
        default=0.10, ge=0, le=1, description="expected calibration error may rise this much"
    )
    min_ece_rows: int = Field(
        default=100, ge=1, description="ECE is checked on a holdout at least this large"
    )
    latency_ratio: float = Field(
        default=1.5, ge=1, description="candidate p50 latency / current p50 latency, at most"
    )
    latency_slack_ms: float = Field(
        default=2.0, ge=0, description="latency differences below this never fail the gate"
    )
    min_holdout: int = Field(default=40, ge=1)
    retained_rows: int = Field(
        default=400,
        ge=0,
        description="held-out rows from before the round's window (older traffic, never "
        "trained on) on which the candidate must keep its teacher agreement; 0: not checked",
    )
    retained_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="agreement on the retained rows may drop this much plus confidence_z "
        "paired standard errors; checked on at least min_holdout rows",
    )
    first_version_min_agreement: float = Field(default=0.6, ge=0, le=1)


ONLINE_CHECKS = {"teacher_agreement", "negative_feedback", "error_rate", "p99_latency"}


class RolloutSettings(BaseSettings):
    """Shadow → canary → full, with automatic rollback. A stage ends after ``*_s`` seconds once
    every check has its minimum evidence, or after ``max_stage_s`` with no failing check, except
    that a canary is never promoted without the evidence ``required_checks`` need: it is held,
    widened step by step; a check that fails with its minimum evidence rolls the candidate back
    at once."""

    model_config = env_prefix("ROLLOUT_")

    enabled: bool = True
    shadow_s: float = Field(default=30, ge=0)
    canary_s: float = Field(default=60, ge=0)
    max_stage_s: float = Field(default=300, gt=0)
    shadow_share: float = Field(default=1.0, ge=0, le=1, description="requests mirrored")
    canary_share: float = Field(default=0.1, gt=0, le=1, description="requests answered")
    min_requests: int = Field(default=100, ge=1, description="per version, for error and p99")
    min_labels: int = Field(default=20, ge=1, description="teacher labels, for agreement")
    min_feedback: int = Field(default=10, ge=1, description="ratings, for negative feedback")
    max_agreement_drop: float = Field(default=0.05, ge=0, le=1)
    max_negative_feedback_rise: float = Field(default=0.10, ge=0, le=1)
    max_error_rate_rise: float = Field(default=0.01, ge=0, le=1)
    confidence_z: float = Field(
        default=1.64,
        ge=0,
        description="a share check fails only when the candidate is worse than allowed by more "
        "than z standard errors of the difference (1.64: one-sided 95%; 0: on the point values)",
    )
    max_p99_ratio: float = Field(default=2.0, ge=1)
    p99_slack_ms: float = Field(default=50.0, ge=0, description="p99 differences below pass")
    report_s: float = Field(default=2.0, gt=0, description="replicas report their counts")
    required_checks: str = Field(
        default="teacher_agreement,error_rate,p99_latency",
        description="comma-separated canary checks that need their minimum evidence before "
        "promotion (the others are named as unmeasured)",
    )
    timeout_promotes: bool = Field(
        default=False,
        description="true: a canary is promoted once max_stage_s is up with no check failed, "
        "even without the evidence required_checks need",
    )
    max_canary_share: float = Field(
        default=0.5, gt=0, le=1, description="a canary held for evidence widens up to this share"
    )
    share_step: float = Field(
        default=2.0,
        gt=1,
        description="a held canary's share is multiplied by this each max_stage_s",
    )
    max_hold_s: float = Field(
        default=3600, gt=0, description="a canary held this long at its widest is rolled back"
    )

    @model_validator(mode="after")
    def _stage_fits(self) -> RolloutSettings:
        longest = max(self.shadow_s, self.canary_s)
        if longest > self.max_stage_s:
            raise ValueError(f"max_stage_s={self.max_stage_s} is below a stage of {longest}s")
        unknown = self.required() - ONLINE_CHECKS
        if unknown:
            raise ValueError(
                f"required_checks={self.required_checks!r}: {sorted(unknown)} not among "
                f"{sorted(ONLINE_CHECKS)}"
            )
        if self.max_canary_share < self.canary_share:
            raise ValueError(
                f"max_canary_share={self.max_canary_share} is below "
                f"canary_share={self.canary_share}"
            )
        return self

    def required(self) -> set[str]:
        return {c.strip() for c in self.required_checks.split(",") if c.strip()}
