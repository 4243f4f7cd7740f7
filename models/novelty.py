"""How far an input is from the data a student was trained on: a cheap novelty score.

The reference is the training window's pooled student embeddings (the mean of the last layer's
token states), summarised by a per-dimension mean and standard deviation. An input's score is
its standardised Euclidean distance to that centroid, in units of the 95th percentile of the
training rows' own distances: about 5% of in-distribution inputs score above 1, while a domain
the student never saw scores well above it (diagonal Mahalanobis distance; Lee et al. 2018 use
the full-covariance version for out-of-distribution detection).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILENAME = "novelty.json"


@dataclass(frozen=True)
class Reference:
    mean: np.ndarray  # (H,)
    scale: np.ndarray  # (H,) per-dimension standard deviation, floored
    radius: float  # the quantile of training distances that scores 1.0

    def distance(self, pooled: np.ndarray) -> np.ndarray:
        """Standardised distance to the centroid, (B, H) → (B,)."""
        z = (pooled - self.mean) / self.scale  # (B, H)
        result: np.ndarray = np.sqrt((z**2).mean(axis=-1))  # (B,)
        return result

    def score(self, pooled: np.ndarray) -> np.ndarray:
        """Novelty, (B, H) → (B,): 1.0 is the training window's ``quantile`` distance."""
        return self.distance(pooled) / self.radius

    def save(self, folder: Path) -> None:
        body = {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "radius": self.radius}
        (folder / FILENAME).write_text(json.dumps(body))

    @classmethod
    def load(cls, folder: Path) -> Reference | None:
        """The reference saved beside a student, or None for a student saved without one."""
        path = folder / FILENAME
        if not path.is_file():
            return None
        body = json.loads(path.read_text())
        return cls(
            np.asarray(body["mean"], dtype=np.float32),
            np.asarray(body["scale"], dtype=np.float32),
            float(body["radius"]),
        )


def fit_reference(pooled: np.ndarray, quantile: float = 0.95) -> Reference:
    """Summarise training embeddings, (N, H), N ≥ 2."""
    if pooled.ndim != 2 or len(pooled) < 2:
        raise ValueError(f"need (N ≥ 2, H) embeddings to fit a reference, got {pooled.shape}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    mean = pooled.mean(axis=0)  # (H,)
    scale = np.maximum(pooled.std(axis=0), 1e-4)  # (H,)
    partial = Reference(mean, scale, 1.0)
    radius = float(np.quantile(partial.distance(pooled), quantile))
    return Reference(mean.astype(np.float32), scale.astype(np.float32), max(radius, 1e-6))
