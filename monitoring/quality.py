"""Label-free quality: teacher–student disagreement and user feedback, per served version.

For a generate task the disagreement is one minus the served replies' chrF against the
teacher's (``reply_disagreement``); the rest is the same.

Pure functions over the example store's frames (``feedback.examples.read_kind``): teacher-label
rows carry the served version and its answer (``model_version``, ``student_probs``) beside the
teacher's (``teacher_probs``); feedback rows carry the rated version and the rating (1–5).
A request rated twice counts once, with its latest rating.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from feedback.examples import latest_ratings, recent
from training.chrf import mean_chrf
from training.rollout import feedback_evidence, teacher_evidence


@dataclass(frozen=True)
class VersionQuality:
    version: int
    labelled: int  # teacher labels on its answers
    disagreement: float | None  # share of those the teacher labelled otherwise, 0..1
    rated: int  # requests rated
    mean_rating: float | None  # 1..5
    negative_share: float | None  # share rated at most ``bad_rating_max``, 0..1


def per_version(
    labels: pd.DataFrame, feedback: pd.DataFrame, bad_rating_max: int
) -> list[VersionQuality]:
    """Quality of every version seen in either frame, by version."""
    seen: set[int] = set()
    for frame in (labels, feedback):
        if not frame.empty and "model_version" in frame:
            seen |= {int(v) for v in frame["model_version"].dropna().unique()}
    ratings = latest_ratings(feedback)
    out = []
    for version in sorted(seen):
        labelled, agreed = teacher_evidence(labels, version, shadow=False)
        rated, negative = feedback_evidence(ratings, version, bad_rating_max)
        mine = ratings[ratings["model_version"] == version] if rated else ratings[:0]
        out.append(
            VersionQuality(
                version=version,
                labelled=labelled,
                disagreement=1 - agreed / labelled if labelled else None,
                rated=rated,
                mean_rating=float(mine["rating"].mean()) if rated else None,
                negative_share=negative / rated if rated else None,
            )
        )
    return out


@dataclass(frozen=True)
class FeedbackSummary:
    rated: int  # requests rated
    feedback_per_min: float
    mean_rating: float | None  # 1..5
    negative_share: float | None  # 0..1


def feedback_summary(
    feedback: pd.DataFrame, since: float, now: float, bad_rating_max: int
) -> FeedbackSummary:
    """Ratings per minute, mean rating and negative share over [since, now] (all versions)."""
    rows = latest_ratings(recent(feedback, since))
    minutes = max((now - since) / 60, 1e-9)
    rated = len(rows)
    return FeedbackSummary(
        rated=rated,
        feedback_per_min=rated / minutes,
        mean_rating=float(rows["rating"].mean()) if rated else None,
        negative_share=float((rows["rating"] <= bad_rating_max).mean()) if rated else None,
    )


def reply_disagreement(labels: pd.DataFrame, version: int | None) -> tuple[int, float | None]:
    """A generate task's label-free quality for ``version``: (replies, 1 − mean chrF / 100) of
    its served replies (``student_reply``) against the teacher's (``reply``) on label rows of
    that version; None without any. The same chrF the gate and the labeler's
    ``distillery_teacher_similarity`` use (``training.chrf``)."""
    needed = {"model_version", "reply", "student_reply"}
    if version is None or labels.empty or not needed <= set(labels):
        return 0, None
    rows = labels[
        (labels["model_version"] == version)
        & labels["reply"].notna()
        & labels["student_reply"].notna()
    ]
    if rows.empty:
        return 0, None
    mean = mean_chrf([str(s) for s in rows["student_reply"]], [str(t) for t in rows["reply"]])
    return len(rows), 1 - mean / 100
