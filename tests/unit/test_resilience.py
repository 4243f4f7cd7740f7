"""Backoff, Retry-After, the circuit breaker and the budget, on a clock driven by hand."""

from __future__ import annotations

import random

import pytest

from models.resilience import Bucket, Budget, CircuitBreaker, backoff_s, parse_retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_full_jitter_under_a_doubling_ceiling_and_honours_retry_after() -> None:
    rng = random.Random(0)
    for attempt in range(6):
        delays = [backoff_s(attempt, 0.5, 8.0, rng=rng) for _ in range(200)]
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # it spreads over the whole range
    assert backoff_s(0, 0.5, 8.0, retry_after_s=3.0, rng=rng) >= 3.0
    assert backoff_s(0, 0.5, 8.0, retry_after_s=100.0, rng=rng) == 8.0  # capped


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    assert when == pytest.approx(10.0)


def test_breaker_opens_after_consecutive_failures_probes_once_then_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t", failures=3, reset_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow() == 0
        breaker.failed("boom")
    assert breaker.state == "closed"
    breaker.succeeded()  # a success resets the count
    for _ in range(3):
        breaker.failed("boom")
    assert breaker.state == "open" and breaker.allow() == pytest.approx(10)
    assert not breaker.health().up and breaker.health().last_error == "boom"
    clock.now = 10.5
    assert breaker.allow() == 0  # the probe
    assert breaker.allow() > 0  # only one probe at a time
    breaker.failed("still down")  # a failed probe opens it again
    assert breaker.state == "open" and breaker.allow() == pytest.approx(10)
    clock.now = 21
    assert breaker.allow() == 0
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow() == 0
    assert breaker.transitions == ["open", "half_open", "open", "half_open", "closed"]


def test_bucket_refills_per_minute_and_holds_at_most_a_minute() -> None:
    clock = Clock()
    bucket = Bucket(60, clock)  # one a second
    bucket.spend(60)
    assert bucket.wait_s(1) == pytest.approx(1.0)
    clock.now = 3600  # an idle hour
    assert bucket.wait_s(60) == 0
    bucket.spend(60)
    assert bucket.wait_s(30) == pytest.approx(30.0)
    with pytest.raises(ValueError, match="-1"):
        Bucket(-1, clock)


def test_budget_waits_for_tokens_estimated_from_recent_requests() -> None:
    clock = Clock()
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.now += s

    budget = Budget(None, tokens_per_min=600, clock=clock, sleep=sleep)
    for _ in range(6):
        budget.acquire()
        budget.settle(100)  # 100 tokens a request: the minute's 600 are spent
    assert not slept
    budget.acquire()
    assert sum(slept) == pytest.approx(10.0, abs=0.6)  # 100 tokens at 10 a second
