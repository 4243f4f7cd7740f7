"""What the drift checks compare: per-row frames built from texts, answers and embeddings.

Three kinds of columns, checked together in one Evidently run and reported per kind:

- ``features``: cheap text statistics (length, words, digits, case, non-ASCII, unknown tokens);
- ``embedding``: the first principal components of the student's pooled embeddings, the
  projection fitted on the reference window (``embedding_components``);
- ``prediction``: the student's predicted label and its confidence (top-1 probability).

Pure functions: no Evidently, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

LABEL_COLUMN = "predicted_label"
FEATURE_COLUMNS = (
    "char_length",
    "word_count",
    "digit_share",
    "upper_share",
    "non_ascii_share",
    "unknown_token_share",
)
PREDICTION_COLUMNS = (LABEL_COLUMN, "confidence")


def text_features(
    texts: Sequence[str], unknown_share: Sequence[float] | None = None
) -> pd.DataFrame:
    """Cheap per-text features for drift checks, one row per text.

    ``char_length`` is in characters, ``word_count`` in whitespace-separated words.
    ``digit_share`` and ``non_ascii_share`` are fractions (0..1) of all characters;
    ``upper_share`` is the fraction of alphabetic characters that are upper case.
    ``unknown_token_share`` (0..1, tokenizer unknown tokens over tokens) comes from the caller,
    0.0 when not given. Raises ValueError if the sequences differ in length.
    """
    n = len(texts)
    if unknown_share is not None and len(unknown_share) != n:
        raise ValueError(f"{n} texts but {len(unknown_share)} unknown_share values")
    frame = pd.DataFrame([_char_features(text) for text in texts], columns=FEATURE_COLUMNS[:5])
    frame = frame.astype(
        {
            "char_length": "int64",
            "word_count": "int64",
            "digit_share": "float64",
            "upper_share": "float64",
            "non_ascii_share": "float64",
        }
    )
    shares = [0.0] * n if unknown_share is None else [float(v) for v in unknown_share]
    frame["unknown_token_share"] = pd.Series(shares, dtype="float64")
    return frame


def _char_features(text: str) -> tuple[int, int, float, float, float]:
    length = len(text)
    letters = sum(ch.isalpha() for ch in text)
    digits = sum(ch.isdigit() for ch in text)
    upper = sum(ch.isupper() for ch in text)
    non_ascii = sum(not ch.isascii() for ch in text)
    per_char = max(length, 1)
    return (
        length,
        len(text.split()),
        digits / per_char,
        upper / letters if letters else 0.0,
        non_ascii / per_char,
    )


def prediction_features(probs: np.ndarray, label_names: Sequence[str]) -> pd.DataFrame:
    """``predicted_label`` (a label name) and ``confidence`` (top-1 probability, 0..1) per row
    of ``probs`` (N, C); raises ValueError when C differs from the number of label names."""
    if probs.ndim != 2 or probs.shape[1] != len(label_names):
        raise ValueError(f"probs of shape {probs.shape} do not match labels {list(label_names)}")
    top = probs.argmax(1)  # (N,)
    return pd.DataFrame(
        {
            LABEL_COLUMN: pd.Series([str(label_names[i]) for i in top], dtype=object),
            "confidence": pd.Series(probs.max(1), dtype="float64"),
        }
    )


def embedding_components(
    reference: np.ndarray, current: np.ndarray, k: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both windows' pooled embeddings, (N, H) and (M, H), projected on the reference's first
    ``k`` principal components (columns ``pc1``..``pck``; centred on the reference mean).

    Per-component tests on a projection fitted on the reference see a shift along the
    directions the reference varies in; a shift orthogonal to all ``k`` of them goes unseen,
    which is why ``k`` is a setting. Raises ValueError on mismatched widths or too few rows."""
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"embedding shapes differ: {reference.shape} vs {current.shape}")
    k = min(k, reference.shape[1])
    if len(reference) <= k:
        raise ValueError(f"{len(reference)} reference rows cannot give {k} components")
    mean = reference.mean(0, keepdims=True)  # (1, H)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)  # vt: (H, H)
    basis = vt[:k].T  # (H, k)
    sign = np.sign(basis.sum(0, keepdims=True)) + (basis.sum(0, keepdims=True) == 0)  # (1, k)
    basis = basis * sign  # a deterministic orientation per component
    names = [f"pc{i + 1}" for i in range(k)]
    ref = pd.DataFrame((reference - mean) @ basis, columns=names).astype("float64")  # (N, k)
    cur = pd.DataFrame((current - mean) @ basis, columns=names).astype("float64")  # (M, k)
    return ref, cur


def kinds_of(columns: Sequence[str]) -> dict[str, list[str]]:
    """Which drift kind each column of a combined frame belongs to (``pc*`` → embedding)."""
    kinds: dict[str, list[str]] = {"features": [], "embedding": [], "prediction": []}
    for column in columns:
        if column in PREDICTION_COLUMNS:
            kinds["prediction"].append(column)
        elif column.startswith("pc") and column[2:].isdigit():
            kinds["embedding"].append(column)
        else:
            kinds["features"].append(column)
    return {kind: cols for kind, cols in kinds.items() if cols}
