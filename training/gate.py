"""The evaluation gate: a candidate replaces the current student only if it is not worse.

``measure`` runs a student on held-out rows; ``decide`` is the pure decision, each check recorded
with both values and its threshold so a failed gate says exactly why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from distillery.settings import GateSettings
from services.student import Student


@dataclass(frozen=True)
class Measures:
    agreement: float  # share of held-out rows where argmax matches the teacher's
    golden_accuracy: float | None  # share of human corrections matched; None without any
    holdout_rows: int
    golden_rows: int


@dataclass(frozen=True)
class Check:
    name: str
    candidate: float
    current: float
    threshold: float  # candidate must be ≥ threshold
    passed: bool


@dataclass(frozen=True)
class GateReport:
    passed: bool
    checks: list[Check] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(student: Student, holdout: pd.DataFrame, golden: pd.DataFrame) -> Measures:
    agreement = 0.0
    if len(holdout):
        probs = student.predict_proba(list(holdout["text"]))  # (N, C)
        teacher = np.array(list(holdout["teacher_probs"]))  # (N, C)
        agreement = float((probs.argmax(1) == teacher.argmax(1)).mean())
    golden_accuracy = None
    if len(golden):
        probs = student.predict_proba(list(golden["text"]))
        golden_accuracy = float((probs.argmax(1) == golden["correction"].to_numpy()).mean())
    return Measures(agreement, golden_accuracy, len(holdout), len(golden))


def decide(candidate: Measures, current: Measures | None, settings: GateSettings) -> GateReport:
    """Pass when every check passes; with no current student, agreement must beat chance."""
    if candidate.holdout_rows < settings.min_holdout:
        return GateReport(
            False, [], f"holdout has {candidate.holdout_rows} rows, need {settings.min_holdout}"
        )
    if current is None:
        floor = settings.first_version_min_agreement
        check = Check("agreement", candidate.agreement, 0.0, floor, candidate.agreement >= floor)
        return _report([check])
    checks = [
        _at_least("agreement", candidate.agreement, current.agreement, settings.agreement_margin)
    ]
    if candidate.golden_accuracy is not None and current.golden_accuracy is not None:
        checks.append(
            _at_least(
                "golden_accuracy",
                candidate.golden_accuracy,
                current.golden_accuracy,
                settings.correction_margin,
            )
        )
    return _report(checks)


def _at_least(name: str, candidate: float, current: float, margin: float) -> Check:
    threshold = current - margin
    return Check(name, candidate, current, threshold, candidate >= threshold)


def _report(checks: list[Check]) -> GateReport:
    failed = [c for c in checks if not c.passed]
    reason = "; ".join(
        f"{c.name} {c.candidate:.3f} < {c.threshold:.3f} (current {c.current:.3f})" for c in failed
    )
    return GateReport(not failed, checks, reason or "all checks passed")
