"""The sampling benchmark's pure parts: the split, the scores, labels-saved interpolation, AUC,
the verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.sampling import uniform
from bench.sampling_data import build_split, state_dir, teacher_logits
from bench.sampling_metrics import (
    auc,
    score,
    teacher_view,
    uniform_budget_to_match,
    unsure_stats,
    verdict,
)
from distillery.settings import Settings
from distillery.task import Label, Task
from distillery.vader import VaderRow
from models.teacher import TeacherBatch

TASK = Task(
    name="t", labels=[Label(name="negative", prompt="bad"), Label(name="positive", prompt="good")]
)


def _rows(domain: str, n: int) -> list[VaderRow]:
    return [
        VaderRow(f"{domain} {i}", "positive" if i % 2 else "negative", domain, 1.0)
        for i in range(n)
    ]


def test_split_is_disjoint_with_the_asked_sizes_and_tweet_share() -> None:
    movies, tweets = _rows("movies", 200), _rows("tweets", 100)
    movies.append(movies[3])  # a duplicate sentence must not leak into two sets
    seed = [row.text for row in movies[:40]]
    split = build_split(movies, tweets, seed, eval_n=20, stream_n=100, tweet_share=0.4, seed=1)
    assert [row.text for row in split.seed] == seed
    assert (len(split.eval_movies), len(split.eval_tweets), len(split.stream)) == (20, 20, 100)
    assert sum(row.domain == "tweets" for row in split.stream) == 40
    assert {row.domain for row in split.eval_tweets} == {"tweets"}
    texts = split.texts()
    assert len(texts) == len(set(texts))
    again = build_split(movies, tweets, seed, eval_n=20, stream_n=100, tweet_share=0.4, seed=1)
    assert again == split
    domains = [row.domain for row in split.stream]
    assert domains != sorted(domains)  # shuffled, not movies then tweets


def test_split_refuses_when_a_domain_is_too_small() -> None:
    with pytest.raises(ValueError, match="tweets"):
        build_split(_rows("movies", 200), _rows("tweets", 30), [], 20, 100, 0.4)


def test_labels_to_match_interpolates_at_the_first_crossing() -> None:
    curve = [(0.0, 0.70), (100.0, 0.74), (200.0, 0.78), (400.0, 0.76), (800.0, 0.80)]
    assert uniform_budget_to_match(curve, 0.76) == pytest.approx(150.0)
    assert uniform_budget_to_match(curve, 0.79) == pytest.approx(700.0)
    assert uniform_budget_to_match(curve, 0.65) == 0.0  # v1 already there
    assert uniform_budget_to_match(curve, 0.81) is None  # not reached
    assert uniform_budget_to_match([], 0.5) is None


def test_uniform_picks_are_distinct_sorted_and_reproducible() -> None:
    picks = uniform(50, 10, seed=3)
    assert picks == sorted(set(picks)) and len(picks) == 10
    assert picks == uniform(50, 10, seed=3)


def test_auc() -> None:
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    assert auc(scores, np.array([False, False, True, True])) == 1.0
    assert auc(scores, np.array([True, True, False, False])) == 0.0
    assert auc(np.ones(4), np.array([True, False, True, False])) == 0.5
    assert np.isnan(auc(scores, np.zeros(4, dtype=bool)))


def _scored_rows() -> tuple[list[VaderRow], dict[str, np.ndarray]]:
    """Four tweets: the teacher is confident and right on 0 and 1, confident and wrong on 2,
    near 50/50 (and right) on 3. Labels: 0 = negative, 1 = positive."""
    rows = _rows("tweets", 4)  # labels: negative, positive, negative, positive
    logits = {
        rows[0].text: np.array([2.0, 0.0]),
        rows[1].text: np.array([0.0, 2.0]),
        rows[2].text: np.array([0.0, 2.0]),
        rows[3].text: np.array([0.0, 0.1]),
    }
    return rows, logits


def test_teacher_view_gives_argmax_and_probability_margin() -> None:
    rows, logits = _scored_rows()
    top, margins = teacher_view(rows, logits)
    assert top.tolist() == [0, 1, 1, 1]
    assert margins[0] == pytest.approx(np.tanh(1.0))  # p1 - p2 = tanh(Δ/2) for two labels
    assert margins[3] == pytest.approx(np.tanh(0.05))


def test_score_separates_confident_agreement_from_coin_flips() -> None:
    rows, logits = _scored_rows()
    labels = ["negative", "positive"]
    # agrees with the teacher on 0 and 1, not on 2 and the coin flip 3
    result = score(np.array([0, 1, 0, 0]), rows, logits, labels)
    assert result["agreement"] == pytest.approx(0.5)
    assert result["confident_agreement"] == pytest.approx(2 / 3)  # row 3 does not count
    assert result["accuracy"] == pytest.approx(0.75)  # right on 0, 1, 2
    assert result["accuracy_gap"] == pytest.approx(0.75 - 0.75)  # teacher: right on 0, 1, 3
    teacher = score(np.array([0, 1, 1, 1]), rows, logits, labels)
    assert teacher["agreement"] == teacher["confident_agreement"] == 1.0
    assert teacher["accuracy_gap"] == 0.0
    unsure = unsure_stats(np.array([0, 1, 0, 0]), rows, logits)
    assert unsure == {"teacher_unsure_share": 0.25, "disagreements_unsure_share": 0.5}


def test_verdict_names_wins_and_noise() -> None:
    summary = [
        {
            "budget": 100,
            "gain_points": 3.0,
            "gain_points_by_seed": [2.5, 3.5],
            "accuracy_gain_points_by_seed": [1.0, 1.0],
            "agreement_gain_points_by_seed": [0.0, -1.0],
            "labels_saved": 150.0,
        },
        {
            "budget": 200,
            "gain_points": 2.0,
            "gain_points_by_seed": [1.5, 2.5],
            "accuracy_gain_points_by_seed": [1.0, 1.0],
            "agreement_gain_points_by_seed": [0.0, -1.0],
            "labels_saved": None,
        },
    ]
    line = verdict(summary)
    assert "beat uniform on the tweet teacher gap" in line and "2/2" in line
    assert "+2.5 points" in line and "more than two standard errors" in line
    assert "B=200: not reached" in line
    assert "accuracy gap +1.0" in line and "plain agreement -0.5" in line


def test_llm_logits_are_label_log_probs_cached_as_they_come_and_uniform_when_unreadable(
    tmp_path: Path,
) -> None:
    class Llm:
        calls = 0

        def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
            Llm.calls += len(texts)
            probs = np.tile(np.asarray([0.25, 0.75], dtype=np.float32), (len(texts), 1))
            unread = {i: "?" for i, t in enumerate(texts) if t == "garbled"}
            return TeacherBatch(probs, probs, unreadable=unread)

    cache = tmp_path / "llm" / "teacher.npz"
    texts = ["a", "garbled", *[f"t{i}" for i in range(250)]]
    got = teacher_logits(texts, cache, Settings(), TASK, Llm())  # type: ignore[arg-type]
    np.testing.assert_allclose(got["a"], np.log([0.25, 0.75]), rtol=1e-6)
    np.testing.assert_array_equal(got["garbled"], [0.0, 0.0])
    assert Llm.calls == len(texts) and cache.is_file()
    again = teacher_logits([*texts, "new"], cache, Settings(), TASK, Llm())  # type: ignore[arg-type]
    assert Llm.calls == len(texts) + 1 and set(again) == set(texts) | {"new"}
    assert state_dir("llm").name == "bench-sampling-llm" and state_dir("minilm").name == (
        "bench-sampling"
    )
