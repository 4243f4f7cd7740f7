"""Sampler: uniform rate, the bounded cache of unsampled requests, feedback-driven sampling."""

from __future__ import annotations

import random

import pytest

from distillery.events import SampledPrediction
from services.sampling import Sampler


def _event(i: int) -> SampledPrediction:
    return SampledPrediction(
        request_id=f"r-{i}", text=f"text {i}", student_probs=[0.5, 0.5], model_version=1
    )


def test_rate_zero_never_samples() -> None:
    sampler = Sampler(0.0, cache_size=10, rng=random.Random(1))
    assert not any(sampler.decide(_event(i)) for i in range(500))


def test_rate_one_always_samples_and_caches_nothing() -> None:
    sampler = Sampler(1.0, cache_size=10, rng=random.Random(1))
    assert all(sampler.decide(_event(i)) for i in range(500))
    assert sampler.on_feedback("r-3") is None


def test_rate_point_two_samples_about_a_fifth() -> None:
    sampler = Sampler(0.2, cache_size=0, rng=random.Random(1234))
    share = sum(sampler.decide(_event(i)) for i in range(5_000)) / 5_000
    assert share == pytest.approx(0.2, abs=0.02)  # ±4 binomial standard deviations


def test_seeded_sampler_is_reproducible() -> None:
    first = Sampler(0.5, 0, random.Random(7))
    second = Sampler(0.5, 0, random.Random(7))
    decisions = [first.decide(_event(i)) for i in range(200)]
    assert decisions == [second.decide(_event(i)) for i in range(200)]
    assert 0 < sum(decisions) < 200


def test_unsampled_event_is_returned_once_on_feedback() -> None:
    sampler = Sampler(0.0, cache_size=10)
    event = _event(1)
    assert sampler.decide(event) is False
    cached = sampler.on_feedback("r-1")
    assert cached is not None
    assert cached.reason == "feedback"
    assert cached.model_dump(exclude={"reason"}) == event.model_dump(exclude={"reason"})
    assert event.reason == "uniform"  # the original is not mutated
    assert sampler.on_feedback("r-1") is None


def test_feedback_for_an_unknown_request_is_none() -> None:
    sampler = Sampler(0.0, cache_size=10)
    sampler.decide(_event(1))
    assert sampler.on_feedback("r-404") is None
    assert sampler.on_feedback("r-1") is not None


def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    sampler = Sampler(0.0, cache_size=3)
    for i in range(5):
        sampler.decide(_event(i))
    assert sampler.on_feedback("r-0") is None
    assert sampler.on_feedback("r-1") is None
    assert [sampler.on_feedback(f"r-{i}") is not None for i in (2, 3, 4)] == [True, True, True]


def test_cache_size_zero_keeps_nothing() -> None:
    sampler = Sampler(0.0, cache_size=0)
    sampler.decide(_event(1))
    assert sampler.on_feedback("r-1") is None


def test_popped_entry_frees_room() -> None:
    sampler = Sampler(0.0, cache_size=2)
    sampler.decide(_event(0))
    sampler.decide(_event(1))
    assert sampler.on_feedback("r-0") is not None
    sampler.decide(_event(2))
    assert sampler.on_feedback("r-1") is not None  # not evicted: r-0 had already left
    assert sampler.on_feedback("r-2") is not None


@pytest.mark.parametrize("rate", [-0.01, 1.01, 2.0])
def test_rate_outside_unit_interval_raises(rate: float) -> None:
    with pytest.raises(ValueError, match=r"sample rate must be in \[0, 1\]"):
        Sampler(rate, cache_size=1)
