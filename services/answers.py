"""A classifier's answer to one text: the ``Prediction`` a client gets, and the
``SampledPrediction`` the sampler or the cascade may send on, under one request id."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import numpy as np

from distillery.events import SampledPrediction
from feedback.models import Prediction
from feedback.tokens import sign


def answer(
    labels: list[str], secret: bytes, text: str, probs: np.ndarray, version: int,
    novelty: float | None, key_id: str,
) -> tuple[Prediction, SampledPrediction]:  # fmt: skip
    """probs (C,) in ``labels`` order; the feedback token vouches for the top label."""
    request_id = uuid.uuid4().hex
    label = labels[int(probs.argmax())]
    event = SampledPrediction(
        request_id=request_id, text=text, student_probs=[float(p) for p in probs],
        model_version=version, novelty=novelty, key_id=key_id,
    )  # fmt: skip
    prediction = Prediction(
        request_id=request_id,
        label=label,
        probabilities=dict(zip(labels, map(float, probs), strict=True)),
        model_version=version,
        feedback_token=sign(secret, request_id, version, label, key_id),
    )
    return prediction, event


def count(metric: Any, predictions: list[Prediction]) -> None:
    """``distillery_predictions_total`` by version and label, one increment per pair."""
    answered = Counter((p.model_version, p.label) for p in predictions)
    for (version, label), n in answered.items():
        metric.inc(n, tags={"model_version": str(version), "label": label})
