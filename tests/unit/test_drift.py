"""Drift checks through Evidently: stable windows, shifted windows, pinning and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import data_drift, drift_by_kind, pinned_methods
from monitoring.features import (
    embedding_components,
    kinds_of,
    prediction_features,
    text_features,
)

LABELS = ("negative", "positive")


def _window(seed: int, n: int, words: tuple[int, int], positive: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = [" ".join(["word"] * int(k)) for k in rng.integers(words[0], words[1], n)]
    labels = rng.choice(LABELS, n, p=[1 - positive, positive]).tolist()
    frame = text_features(texts)
    frame["predicted_label"] = pd.Series(labels, dtype=object)
    return frame


def test_text_features_values_and_types() -> None:
    frame = text_features(["Ab 12", "", "ÉÉ x"], [0.1, 0, 1])
    assert frame["char_length"].tolist() == [5, 0, 4]
    assert frame["word_count"].tolist() == [2, 0, 2]
    assert frame["digit_share"].tolist() == pytest.approx([0.4, 0.0, 0.0])
    assert frame["upper_share"].tolist() == pytest.approx([0.5, 0.0, 2 / 3])
    assert frame["non_ascii_share"].tolist() == pytest.approx([0.0, 0.0, 0.5])
    assert frame["unknown_token_share"].tolist() == pytest.approx([0.1, 0.0, 1.0])
    assert str(frame["char_length"].dtype) == "int64"
    assert text_features(["a"])["unknown_token_share"].tolist() == [0.0]


def test_text_features_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 unknown_share values"):
        text_features(["a", "b"], [0.5])


def test_prediction_features_give_label_and_confidence() -> None:
    frame = prediction_features(np.array([[0.2, 0.8], [0.9, 0.1]]), LABELS)
    assert frame["predicted_label"].tolist() == ["positive", "negative"]
    assert frame["confidence"].tolist() == pytest.approx([0.8, 0.9])
    with pytest.raises(ValueError, match=r"\(2, 3\) do not match"):
        prediction_features(np.ones((2, 3)) / 3, LABELS)


def test_embedding_components_are_fitted_on_the_reference() -> None:
    rng = np.random.default_rng(0)
    scale = np.array([5.0, 3.0, 1.0, 0.1])  # variance mostly along the first two axes
    reference = rng.normal(size=(500, 4)) * scale  # (N, H)
    current = rng.normal(size=(300, 4)) * scale + np.array([4.0, 0, 0, 0])  # shifted on axis 0
    ref, cur = embedding_components(reference, current, k=2)
    assert list(ref.columns) == ["pc1", "pc2"] and (len(ref), len(cur)) == (500, 300)
    assert abs(ref["pc1"].mean()) < 1e-9  # centred on the reference
    assert ref["pc1"].var() > ref["pc2"].var() > 1.0  # ordered by the reference's variance
    assert abs(cur["pc1"].mean()) == pytest.approx(4.0, abs=0.5)  # the shift shows on pc1
    with pytest.raises(ValueError, match=r"\(500, 4\) vs \(3, 5\)"):
        embedding_components(reference, np.ones((3, 5)), k=2)


def test_kinds_split_columns_and_drift_is_reported_per_kind() -> None:
    assert kinds_of(["char_length", "pc1", "pc12", "predicted_label", "confidence"]) == {
        "features": ["char_length"],
        "embedding": ["pc1", "pc12"],
        "prediction": ["predicted_label", "confidence"],
    }
    rng = np.random.default_rng(3)
    reference, current = _window(1, 400, (3, 30), 0.5), _window(2, 400, (3, 30), 0.5)
    for frame, shift in ((reference, 0.0), (current, 3.0)):
        frame["pc1"] = rng.normal(size=len(frame)) + shift
        frame["pc2"] = rng.normal(size=len(frame))
    result = drift_by_kind(reference, current)
    assert result["embedding"].drifted_columns == ("pc1",)
    assert result["embedding"].drift_share == pytest.approx(0.5)
    assert set(result["embedding"].column_scores) == {"pc1", "pc2"}
    assert result["features"].drift_share < 0.5
    assert result["prediction"].drifted_columns == ()


def test_same_distribution_has_no_drift() -> None:
    result = data_drift(_window(1, 400, (3, 30), 0.5), _window(2, 400, (3, 30), 0.5))
    assert result.drift_share < 0.3
    assert "char_length" not in result.drifted_columns
    assert "predicted_label" not in result.drifted_columns
    assert result.column_scores["char_length"] > 0.05
    assert (result.reference_rows, result.current_rows) == (400, 400)
    assert result.method == "num=ks,cat=chi2_homogeneity,threshold=0.05"


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
    assert distance.method == "num=wasserstein,cat=chi2_homogeneity,threshold=0.1"


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


def test_auto_picks_a_test_for_small_windows_and_a_distance_for_large_ones() -> None:
    assert pinned_methods("auto", 0.5, 999) == ("ks", "chi2_homogeneity", 0.01)
    assert pinned_methods("auto", 0.5, 1_000) == ("wasserstein", "jensenshannon", 0.15)
    assert pinned_methods("ks", 0.05, 10) == ("ks", "chi2_homogeneity", 0.05)
    assert pinned_methods("wasserstein", 0.2, 10) == ("wasserstein", "jensenshannon", 0.2)
    with pytest.raises(ValueError, match="method='psi'"):
        pinned_methods("psi", 0.1, 10)


def test_the_label_test_counts_the_reference_as_a_sample_too() -> None:
    """The steady-traffic case from test_drift_trigger: 329 held-out reviews (69.3% positive)
    against 500 more of the same file (63.8%). Evidently's ``chisquare`` takes the reference's
    shares as exact and calls it drift at 0.01; the test of homogeneity does not."""
    from scipy.stats import chi2_contingency

    from monitoring.stattests import homogeneity_p

    ref = pd.DataFrame({"predicted_label": ["pos"] * 228 + ["neg"] * 101, "x": range(329)})
    cur = pd.DataFrame({"predicted_label": ["pos"] * 319 + ["neg"] * 181, "x": range(500)})
    expected = chi2_contingency([[101, 228], [181, 319]], correction=False)[1]
    assert homogeneity_p(ref["predicted_label"], cur["predicted_label"]) == pytest.approx(expected)
    fit = data_drift(ref, cur, cat_method="chisquare", threshold=0.01)
    assert "predicted_label" in fit.drifted_columns  # p 0.0077: a false alarm
    both = data_drift(ref, cur, threshold=0.01)
    assert "predicted_label" not in both.drifted_columns
    assert both.column_scores["predicted_label"] == pytest.approx(expected)  # 0.10


def test_homogeneity_of_one_category_or_an_empty_window_is_no_drift() -> None:
    from monitoring.stattests import homogeneity_p

    assert homogeneity_p(pd.Series(["a"] * 5), pd.Series(["a"] * 9)) == 1.0
    assert homogeneity_p(pd.Series(["a", "b"]), pd.Series([], dtype=object)) == 1.0
    assert homogeneity_p(pd.Series(["a"] * 50), pd.Series(["b"] * 50)) < 1e-10
