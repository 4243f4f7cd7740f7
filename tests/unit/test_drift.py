"""Drift checks through Evidently: stable windows, shifted windows, pinning and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import data_drift, text_features

LABELS = ("negative", "positive")


def _window(seed: int, n: int, words: tuple[int, int], positive: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [" ".join(["word"] * int(k)) for k in rng.integers(words[0], words[1], n)]
    labels = rng.choice(LABELS, n, p=[1 - positive, positive]).tolist()
    return text_features(texts, labels)


def test_text_features_values_and_types() -> None:
    frame = text_features(["Ab 12", "", "ÉÉ x"], ["positive", "negative", "positive"], [0.1, 0, 1])
    assert frame["char_length"].tolist() == [5, 0, 4]
    assert frame["word_count"].tolist() == [2, 0, 2]
    assert frame["digit_share"].tolist() == pytest.approx([0.4, 0.0, 0.0])
    assert frame["upper_share"].tolist() == pytest.approx([0.5, 0.0, 2 / 3])
    assert frame["non_ascii_share"].tolist() == pytest.approx([0.0, 0.0, 0.5])
    assert frame["unknown_token_share"].tolist() == pytest.approx([0.1, 0.0, 1.0])
    assert frame["predicted_label"].tolist() == ["positive", "negative", "positive"]
    assert str(frame["char_length"].dtype) == "int64"
    assert text_features(["a"], ["positive"])["unknown_token_share"].tolist() == [0.0]


def test_text_features_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 predicted labels"):
        text_features(["a", "b"], ["positive"])


def test_same_distribution_has_no_drift() -> None:
    result = data_drift(_window(1, 400, (3, 30), 0.5), _window(2, 400, (3, 30), 0.5))
    assert result.drift_share < 0.3
    assert "char_length" not in result.drifted_columns
    assert "predicted_label" not in result.drifted_columns
    assert result.column_scores["char_length"] > 0.05
    assert (result.reference_rows, result.current_rows) == (400, 400)
    assert result.method == "num=ks,cat=chisquare,threshold=0.05"


def test_shifted_lengths_and_labels_drift() -> None:
    result = data_drift(_window(1, 400, (3, 30), 0.5), _window(2, 400, (40, 80), 0.95))
    assert {"char_length", "word_count", "predicted_label"} <= set(result.drifted_columns)
    assert result.column_scores["char_length"] < 0.05
    assert result.column_scores["predicted_label"] < 0.05
    assert result.drift_share == pytest.approx(3 / 7)


def test_constant_columns_do_not_break_tests_or_drift() -> None:
    reference = _window(1, 300, (3, 30), 0.5)
    current = _window(2, 300, (3, 30), 0.5)
    reference["predicted_label"] = "positive"
    current["predicted_label"] = "positive"
    result = data_drift(reference, current)
    assert result.column_scores["predicted_label"] == pytest.approx(1.0)
    assert result.column_scores["unknown_token_share"] == pytest.approx(1.0)
    assert result.drifted_columns == ()
    current["unknown_token_share"] = 0.5
    assert "unknown_token_share" in data_drift(reference, current).drifted_columns


def test_method_and_threshold_are_pinned_above_1000_rows() -> None:
    # Unpinned, Evidently would switch to distance methods for >1000 rows.
    big = data_drift(_window(1, 1500, (3, 30), 0.5), _window(2, 1500, (40, 80), 0.5))
    assert 0.0 <= big.column_scores["char_length"] < 0.05  # a K-S p-value, not a distance
    distance = data_drift(
        _window(1, 300, (3, 30), 0.5),
        _window(2, 300, (40, 80), 0.5),
        num_method="wasserstein",
        threshold=0.1,
    )
    assert distance.column_scores["char_length"] > 1.0  # normed Wasserstein distance
    assert "char_length" in distance.drifted_columns
    assert distance.method == "num=wasserstein,cat=chisquare,threshold=0.1"


def test_categorical_dtype_labels_are_accepted() -> None:
    reference = _window(1, 300, (3, 30), 0.5)
    current = _window(2, 300, (3, 30), 0.05)
    current["predicted_label"] = current["predicted_label"].astype("category")
    assert "predicted_label" in data_drift(reference, current).drifted_columns


def test_empty_frame_is_rejected() -> None:
    reference = _window(1, 50, (3, 30), 0.5)
    with pytest.raises(ValueError, match="current frame is empty"):
        data_drift(reference, reference.iloc[0:0])
    with pytest.raises(ValueError, match="reference frame is empty"):
        data_drift(reference.iloc[0:0], reference)


def test_different_columns_are_rejected() -> None:
    reference = _window(1, 50, (3, 30), 0.5)
    with pytest.raises(ValueError, match=r"only in reference \['word_count'\]"):
        data_drift(reference, reference.drop(columns=["word_count"]))


def test_unknown_method_is_rejected() -> None:
    reference = _window(1, 50, (3, 30), 0.5)
    with pytest.raises(ValueError, match="nope"):
        data_drift(reference, reference, num_method="nope")
