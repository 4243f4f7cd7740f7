"""What the labeler exports per batch (``services.labeler``): what the teacher cost, and how the
served answers compare with the teacher's. Ray's metrics, through ``distillery.metrics``."""

from __future__ import annotations

import time
from collections import Counter

from distillery.events import TeacherLabel
from distillery.metrics import LoopMetrics
from models.teacher import TeacherCost
from training.chrf import chrf


def export_cost(
    metrics: LoopMetrics, counts: dict[str, int], teacher_id: str, cost: TeacherCost
) -> None:
    """Tokens, request durations, cache hits and retries, tagged with the teacher; ``counts``
    (the labeler's ``stats``) adds them up."""
    tags = {"teacher_id": teacher_id}
    for kind, tokens in (("prompt", cost.prompt_tokens), ("completion", cost.completion_tokens)):
        if tokens:
            metrics.teacher_tokens.inc(tokens, tags={**tags, "kind": kind})
    for seconds in cost.request_seconds:
        metrics.teacher_request_s.observe(seconds, tags=tags)
    if cost.cache_hits:
        metrics.teacher_cache_hits.inc(cost.cache_hits, tags=tags)
    if cost.retries:
        metrics.teacher_retries.inc(cost.retries, tags=tags)
    for key, value in (
        ("tokens", cost.prompt_tokens + cost.completion_tokens),
        ("cache_hits", cost.cache_hits),
        ("retries", cost.retries),
    ):
        counts[key] = counts.get(key, 0) + value


def export_mix(metrics: LoopMetrics, weights: dict[str, float]) -> None:
    """An ensemble teacher's mix in use, one gauge per member (``services.teacher_mix``)."""
    total = sum(weights.values()) or 1.0
    for teacher_id, weight in weights.items():
        metrics.teacher_mix_share.set(weight / total, tags={"teacher_id": teacher_id})


def export_labels(metrics: LoopMetrics, labels: list[TeacherLabel]) -> None:
    """Teacher-student agreement per served version (a generate task's: the served reply's
    chrF against the teacher's), and the lag (s) of the oldest prediction in the batch."""
    for lab in labels:
        if lab.reply is not None and lab.student_reply is not None:
            tags = {"model_version": str(lab.model_version)}
            metrics.teacher_similarity.observe(chrf(lab.student_reply, lab.reply), tags=tags)
    agreed = Counter(
        (lab.model_version, _argmax(lab.teacher_probs) == _argmax(lab.student_probs))
        for lab in labels
        if lab.teacher_probs and lab.student_probs
    )
    for (version, same), count in agreed.items():
        tags = {"model_version": str(version), "agreed": str(same).lower()}
        metrics.teacher_compared.inc(count, tags=tags)
    stamps = [lab.predicted_at or lab.ts for lab in labels]
    if stamps:
        metrics.labeler_lag_s.set(max(0.0, time.time() - min(stamps)))


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)
