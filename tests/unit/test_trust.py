"""feedback.trust: the reliability of each key and of the teacher, from labels alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedback.trust import (
    at_chance,
    consensus,
    estimate,
    key_weights,
    reliable_keys,
    teacher_kd_weights,
    weight_of,
)
from feedback.trust_report import CellTrust, Prior, SourceTrust, TrustModel, TrustParams


def test_weight_is_chance_corrected() -> None:
    assert weight_of(0.5, 2) == 0.0
    assert weight_of(0.3, 2) == 0.0  # worse than a guess: ignored, not inverted
    assert weight_of(1.0, 2) == pytest.approx(1.0)
    assert weight_of(0.75, 2) == pytest.approx(0.5)
    assert weight_of(0.25, 4) == 0.0 and weight_of(0.625, 4) == pytest.approx(0.5)


def test_consensus_weighs_votes_and_drops_ties() -> None:
    votes = pd.DataFrame(
        {
            "item": ["a", "a", "b", "b", "c", "d"],
            "key_id": ["k1", "k2", "k1", "bad", "k1", "bad"],
            "label": [1, 0, 1, 0, 0, 1],
        }
    )
    weights = {"k1": 0.9, "k2": 0.9, "bad": 0.0}
    out = consensus(votes, weights, 2).set_index("item")
    assert out.loc["a", "human_label"] == -1  # two equal keys disagree
    assert out.loc["b", "human_label"] == 1  # the weight-0 key does not count
    assert out.loc["b", "human_weight"] == pytest.approx(0.9)
    assert out.loc["c", "human_label"] == 0
    assert out.loc["d", "human_label"] == -1  # only a weight-0 key voted


def _world(n: int, teacher_right: float, seed: int = 0) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    return truth, rng


def _teacher(truth: np.ndarray, right: float, rng: np.random.Generator) -> pd.DataFrame:
    correct = rng.random(len(truth)) < right
    return pd.DataFrame(
        {
            "item": [f"r{i}" for i in range(len(truth))],
            "label": np.where(correct, truth, 1 - truth),
            "confidence": 0.9,
            "slice": "short",
        }
    )


def test_adversary_ends_at_weight_zero_and_honest_keys_near_one() -> None:
    truth, rng = _world(3000, 0.8)
    teacher = _teacher(truth, 0.8, rng)
    rows = []
    for i, y in enumerate(truth):
        if rng.random() < 0.10:
            rows.append((f"r{i}", f"honest-{rng.integers(3)}", int(y)))
        if rng.random() < 0.30:
            rows.append((f"r{i}", "adversary", int(1 - y)))
    votes = pd.DataFrame(rows, columns=["item", "key_id", "label"])
    model = estimate(votes, teacher, TrustParams(n_labels=2))
    weights = key_weights(model)
    assert weights["adversary"] == 0.0
    assert all(weights[f"honest-{k}"] > 0.6 for k in range(3))
    assert reliable_keys(model) == {"honest-0", "honest-1", "honest-2"}
    assert 0.7 < model.teacher.reliability < 0.9  # measured against the honest keys
    assert model.ranked()[-1].source == "adversary"


def test_a_swapped_teacher_gets_weight_zero_against_a_trusted_key() -> None:
    truth, rng = _world(400, 0.2)
    teacher = _teacher(truth, 0.2, rng)  # wrong 80% of the time
    rated = rng.random(len(truth)) < 0.15
    votes = pd.DataFrame(
        {
            "item": [f"r{i}" for i in np.flatnonzero(rated)],
            "key_id": "open",
            "label": truth[rated],
        }
    )
    model = estimate(votes, teacher, TrustParams(n_labels=2, trusted=frozenset({"open"})))
    assert model.teacher.weight == 0.0
    assert model.teacher_weight(0, "short") == 0.0 and model.teacher_weight(1, "short") == 0.0
    assert key_weights(model)["open"] == 1.0  # trusted: weighs 1 whatever it is measured at


def test_without_human_labels_the_teacher_keeps_its_prior() -> None:
    truth, rng = _world(100, 0.8)
    teacher = _teacher(truth, 0.8, rng)
    empty = pd.DataFrame({"item": [], "key_id": [], "label": []})
    params = TrustParams(n_labels=2, teacher_prior=Prior(a=8, b=2))
    model = estimate(empty, teacher, params)
    assert model.teacher.reliability == pytest.approx(0.8)
    assert model.teacher_weight(1, "long") == pytest.approx(0.6)
    assert model.keys == []


def test_teacher_weight_is_measured_per_length_slice() -> None:
    n = 600
    truth = np.arange(n) % 2
    long_text = np.arange(n) >= n // 2
    teacher = pd.DataFrame(
        {
            "item": [f"r{i}" for i in range(n)],
            "label": np.where(long_text, 1 - truth, truth),  # right on short, wrong on long
            "confidence": 0.9,
            "slice": np.where(long_text, "long", "short"),
        }
    )
    votes = pd.DataFrame({"item": [f"r{i}" for i in range(n)], "key_id": "ops", "label": truth})
    model = estimate(votes, teacher, TrustParams(n_labels=2, trusted=frozenset({"ops"})))
    for label in (0, 1):
        assert model.teacher_weight(label, "short") > 0.8
        assert model.teacher_weight(label, "long") == 0.0


def test_at_chance_needs_the_upper_bound_at_or_below_a_guess() -> None:
    assert at_chance(0.25, 60, 2, 1.64)  # a swapped teacher, 60 comparisons: .25 + .092
    assert not at_chance(0.466, 26, 2, 1.64)  # stop 33's movies cell: .466 + .161
    assert not at_chance(0.3, 0, 2, 1.64)  # no comparisons: nothing shown
    assert at_chance(0.466, 26, 2, 0.0)  # on the point value it would be
    assert not at_chance(0.3, 60, 4, 1.64)  # above 1/4


def _model(cells: list[tuple[int, str, float, float]]) -> TrustModel:
    teacher = SourceTrust(source="teacher", reliability=0.7, weight=0.4, agreements=70,
                          comparisons=100, labels=100)  # fmt: skip
    found = [CellTrust(label=lab, slice=name, reliability=r, weight=weight_of(r, 2),
                       comparisons=n) for lab, name, r, n in cells]  # fmt: skip
    return TrustModel(keys=[], teacher=teacher, teacher_cells=found, n_labels=2)


def test_teacher_kd_weights_drop_only_where_the_teacher_is_shown_at_chance() -> None:
    """A row's KD weighs 1, not its cell's weight; 0 where its cell (else its label's) is
    measurably no better than a guess; a slice with few ratings follows its label."""
    model = _model([
        (0, "*", 0.85, 10), (0, "medium", 0.91, 7),  # right: 1
        (1, "*", 0.61, 26), (1, "medium", 0.466, 16),  # noisy, not shown at chance: 1
        (1, "long", 0.2, 200),  # shown at chance: 0
    ])  # fmt: skip
    teacher = pd.DataFrame({"label": [0, 0, 1, 1, 1], "slice": ["medium", "short", "medium",
                            "long", "short"]})  # fmt: skip
    weights = teacher_kd_weights(model, teacher, 1.64, 10.0)
    assert weights.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    swapped = _model([(0, "*", 0.3, 100), (1, "*", 0.3, 100), (1, "long", 0.33, 5)])
    assert teacher_kd_weights(swapped, teacher, 1.64, 10.0).tolist() == [0.0] * 5
    assert teacher_kd_weights(swapped, teacher.iloc[:0], 1.64, 10.0).tolist() == []
