"""A real Evidently drift snapshot for the workspace and UI tests: short texts against long ones,
through ``monitoring.drift.drift_by_kind``'s ``on_snapshot``, as the watch produces it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import drift_by_kind
from monitoring.features import text_features


def drift_snapshot() -> Any:
    rng = np.random.default_rng(0)
    frames = []
    for words in ((3, 30), (40, 80)):
        frame = text_features([" ".join(["w"] * int(k)) for k in rng.integers(*words, 200)])
        frame["predicted_label"] = pd.Series(rng.choice(["a", "b"], 200), dtype=object)
        frames.append(frame)
    got: list[Any] = []
    drift_by_kind(frames[0], frames[1], on_snapshot=got.append)
    assert len(got) == 1
    return got[0]
