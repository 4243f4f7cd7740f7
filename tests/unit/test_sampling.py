"""Sampler: candidates by reason, the teacher budget, the expiring cache, feedback recall."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from distillery.events import SampledPrediction, Topics
from distillery.settings import Settings
from services.sampling import Policy, Sampler, Sampling, TokenBucket, candidate, margin


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _event(
    i: int, probs: list[float] | None = None, novelty: float | None = None
) -> SampledPrediction:
    return SampledPrediction(
        request_id=f"r-{i}",
        text=f"text {i}",
        student_probs=probs or [0.9, 0.1],
        model_version=1,
        novelty=novelty,
    )


def _sampler(
    rate: float,
    cache_size: int = 10,
    per_min: float = 1e9,
    seed: int = 1,
    clock: Clock | None = None,
    ttl_s: float = 3_600,
) -> Sampler:
    policy = Policy(base_rate=rate, margin_below=0.2, novelty_above=1.0)
    budget = TokenBucket(per_min, clock or Clock())
    return Sampler(policy, budget, cache_size, ttl_s, random.Random(seed))


def test_margin_is_top_one_minus_top_two() -> None:
    assert margin([0.7, 0.2, 0.1]) == pytest.approx(0.5)
    assert margin([0.1, 0.45, 0.45]) == pytest.approx(0.0)
    assert margin([1.0]) == 1.0


def test_candidate_reasons_in_priority_order() -> None:
    policy = Policy(base_rate=0.5, margin_below=0.2, novelty_above=1.0)
    unsure_and_novel = _event(0, [0.55, 0.45], novelty=3.0)
    assert candidate(unsure_and_novel, policy, draw=0.99) == "low_margin"
    assert candidate(_event(0, [0.9, 0.1], novelty=3.0), policy, draw=0.99) == "novel"
    assert candidate(_event(0, [0.9, 0.1], novelty=0.5), policy, draw=0.1) == "uniform"
    assert candidate(_event(0, [0.9, 0.1], novelty=0.5), policy, draw=0.9) is None
    assert candidate(_event(0, [0.9, 0.1], novelty=None), policy, draw=0.9) is None


def test_rate_zero_samples_only_priority_reasons() -> None:
    sampler = _sampler(0.0)
    assert all(sampler.decide(_event(i)).event is None for i in range(500))
    decision = sampler.decide(_event(9, [0.52, 0.48]))
    assert decision.event is not None and decision.event.reason == "low_margin"


def test_rate_point_two_samples_about_a_fifth() -> None:
    sampler = _sampler(0.2, cache_size=0, seed=1234)
    share = sum(sampler.decide(_event(i)).event is not None for i in range(5_000)) / 5_000
    assert share == pytest.approx(0.2, abs=0.02)  # ±4 binomial standard deviations


def test_seeded_sampler_is_reproducible() -> None:
    first, second = _sampler(0.5, 0, seed=7), _sampler(0.5, 0, seed=7)
    decisions = [first.decide(_event(i)).event is not None for i in range(200)]
    assert decisions == [second.decide(_event(i)).event is not None for i in range(200)]
    assert 0 < sum(decisions) < 200


def test_skipped_predictions_say_why() -> None:
    sampler = _sampler(0.0, per_min=1)
    assert (sampler.decide(_event(0)).reason, sampler.decide(_event(0)).candidate) == (
        "not_selected",
        "none",
    )
    first = sampler.decide(_event(1, [0.5, 0.5]))
    second = sampler.decide(_event(2, [0.5, 0.5]))
    assert first.reason == "low_margin"
    assert (second.event, second.reason, second.candidate) == (None, "over_budget", "low_margin")


def test_budget_caps_labels_per_minute() -> None:
    clock = Clock()
    sampler = _sampler(1.0, cache_size=0, per_min=60, clock=clock)
    sent = 0
    for step in range(6_000):  # 10 minutes at 10 predictions a second, every one a candidate
        clock.now = step / 10
        sent += sampler.decide(_event(step, [0.5, 0.5])).event is not None
    assert 600 <= sent <= 600 + 60  # 60 a minute, plus at most the one-minute burst


def test_uniform_picks_leave_half_the_bucket_to_priority_reasons() -> None:
    sampler = _sampler(1.0, cache_size=0, per_min=10)
    uniform = sum(sampler.decide(_event(i)).event is not None for i in range(100))
    assert uniform == 5  # 10 tokens, uniform may only spend down to 5
    priority = sum(sampler.decide(_event(i, [0.5, 0.5])).event is not None for i in range(100))
    assert priority == 5  # the reserve is there for unsure predictions


def test_in_a_canary_a_uniform_draw_comes_first_and_spends_the_whole_bucket() -> None:
    """The rollout compares versions on uniform picks only; priority picks had starved them."""
    unsure = [0.5, 0.5]  # every text low-margin: outside a canary none is ever "uniform"
    outside = _sampler(1.0, cache_size=0, per_min=10)
    assert {outside.decide(_event(i, unsure)).reason for i in range(100)} <= {
        "low_margin", "over_budget",
    }  # fmt: skip
    inside = _sampler(1.0, cache_size=0, per_min=10)
    picks = [inside.decide(_event(i, unsure), canary=True) for i in range(100)]
    assert [d.reason for d in picks if d.event is not None] == ["uniform"] * 10  # all 10 tokens
    half = _sampler(0.5, cache_size=0, per_min=1_000, seed=3)  # the draw still decides
    share = sum(half.decide(_event(i), canary=True).reason == "uniform" for i in range(2_000))
    assert 900 < share < 1_100


def test_feedback_is_sampled_even_with_no_budget_left() -> None:
    sampler = _sampler(0.0, per_min=1)
    sampler.decide(_event(0, [0.5, 0.5]))  # spends the only token
    sampler.decide(_event(1))
    recalled = sampler.on_feedback("r-1")
    assert recalled is not None and recalled.reason == "feedback"
    assert sampler.budget.level < 0  # in debt: the next candidates wait for the refill
    assert sampler.decide(_event(2, [0.5, 0.5])).reason == "over_budget"


def test_unsampled_event_is_returned_once_on_feedback() -> None:
    sampler = _sampler(0.0)
    event = _event(1)
    assert sampler.decide(event).event is None
    cached = sampler.on_feedback("r-1")
    assert cached is not None
    assert cached.reason == "feedback"
    assert cached.model_dump(exclude={"reason"}) == event.model_dump(exclude={"reason"})
    assert event.reason == "uniform"  # the original is not mutated
    assert sampler.on_feedback("r-1") is None


def test_feedback_for_an_unknown_request_is_none() -> None:
    sampler = _sampler(0.0)
    sampler.decide(_event(1))
    assert sampler.on_feedback("r-404") is None
    assert sampler.on_feedback("r-1") is not None


def test_cache_forgets_requests_older_than_the_join_window() -> None:
    clock = Clock()
    sampler = _sampler(0.0, clock=clock, ttl_s=60)
    sampler.decide(_event(0))
    clock.now = 30
    sampler.decide(_event(1))
    clock.now = 61
    assert sampler.on_feedback("r-0") is None  # expired
    assert sampler.on_feedback("r-1") is not None
    sampler.decide(_event(2))  # inserting also drops what expired from the front
    assert len(sampler._unsampled) == 1


def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    sampler = _sampler(0.0, cache_size=3)
    for i in range(5):
        sampler.decide(_event(i))
    assert sampler.on_feedback("r-0") is None
    assert sampler.on_feedback("r-1") is None
    assert [sampler.on_feedback(f"r-{i}") is not None for i in (2, 3, 4)] == [True, True, True]


def test_cache_size_zero_keeps_nothing() -> None:
    sampler = _sampler(0.0, cache_size=0)
    sampler.decide(_event(1))
    assert sampler.on_feedback("r-1") is None


@pytest.mark.parametrize("rate", [-0.01, 1.01, 2.0])
def test_rate_outside_unit_interval_raises(rate: float) -> None:
    with pytest.raises(ValueError, match=r"sample rate must be in \[0, 1\], got"):
        Policy(base_rate=rate, margin_below=0.2, novelty_above=1.0)


def test_bad_budget_and_thresholds_name_the_value() -> None:
    with pytest.raises(ValueError, match="got 0"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="got -1"):
        Policy(base_rate=0.1, margin_below=0.2, novelty_above=-1)


class _Counter:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.seen.append(tags or {})


class _Queue:
    def __init__(self, accepts: bool) -> None:
        self.accepts, self.offered = accepts, []

    def offer(self, topic: str, event: SampledPrediction, key: str) -> bool:
        self.offered.append((topic, event.reason, key))
        return self.accepts


def _sampling(rate: float, accepts: bool = True) -> tuple[Sampling, Any, _Queue]:
    metrics: Any = SimpleNamespace(skipped=_Counter(), sampled=_Counter(), sample_dropped=None)
    sampling = Sampling(Settings(), metrics)
    sampling.sampler = _sampler(rate)
    queue = _Queue(accepts)
    sampling.publisher = queue  # type: ignore[assignment]
    return sampling, metrics, queue


def test_a_replica_counts_each_sampling_outcome_with_its_reason() -> None:
    sampling, metrics, queue = _sampling(1.0)
    sampling.offer(_event(1))
    assert queue.offered == [(Topics.SAMPLED, "uniform", "r-1")]
    assert metrics.sampled.seen == [{"reason": "uniform"}] and metrics.skipped.seen == []
    kept, metrics, queue = _sampling(0.0)
    kept.offer(_event(2))
    assert queue.offered == [] and metrics.sampled.seen == []
    assert metrics.skipped.seen == [{"reason": "not_selected", "candidate": "none"}]
    kept.recalled(kept.sampler.on_feedback("r-2") or _event(0))
    assert queue.offered == [(Topics.SAMPLED, "feedback", "r-2")]
    assert metrics.sampled.seen == [{"reason": "feedback"}]


def test_a_sample_the_full_queue_refused_is_not_counted_as_sent() -> None:
    sampling, metrics, queue = _sampling(1.0, accepts=False)
    sampling.offer(_event(1))
    assert len(queue.offered) == 1 and metrics.sampled.seen == []
