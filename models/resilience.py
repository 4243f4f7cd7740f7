"""Pure parts of calling a slow, remote, rate-limited teacher: backoff, a circuit breaker and a
budget. Each takes its clock as an argument, so the unit tests drive time by hand.

- Backoff: exponential with full jitter, ``uniform(0, min(cap, base · 2^attempt))`` (Brooker,
  "Exponential Backoff and Jitter", AWS Architecture Blog 2015: full jitter spreads retrying
  clients best), never sooner than the server's ``Retry-After``.
- Circuit breaker (Nygard, "Release It!", 2007): ``failures`` consecutive failed calls open it;
  while open every call fails at once; after ``reset_s`` one probe is let through (half-open); its
  success closes the breaker, its failure opens it for another ``reset_s``.
- Budget: token buckets (labels per minute, tokens per minute), each holding at most one
  minute's allowance, so an idle hour never buys a burst larger than a minute's worth.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from models.teacher import BreakerState, TeacherHealth

Clock = Callable[[], float]


def backoff_s(
    attempt: int,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ``attempt`` (0 = the first retry)."""
    ceiling = min(cap_s, base_s * 2.0**attempt)
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if
    absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class CircuitBreaker:
    """Thread-safe; ``allow`` before a call, then ``succeeded`` or ``failed``."""

    def __init__(
        self, teacher_id: str, failures: int, reset_s: float, clock: Clock = time.monotonic
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError(
                f"breaker needs failures >= 1 and reset_s > 0, got {failures}, {reset_s}"
            )
        self.teacher_id = teacher_id
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._since_wall = time.time()
        self._consecutive = 0
        self._probing = False
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self.transitions: list[BreakerState] = []

    def allow(self) -> float:
        """0 if a call may go now; else the seconds until the breaker lets a probe through."""
        with self._lock:
            if self._state == "closed":
                return 0.0
            if self._state == "open":
                wait = self._opened_at + self.reset_s - self.clock()
                if wait > 0:
                    return wait
                self._move("half_open")
            if self._probing:  # one probe at a time while half-open
                return min(1.0, self.reset_s)
            self._probing = True
            return 0.0

    def succeeded(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._probing = False
            if self._state != "closed":
                self._move("closed")

    def failed(self, error: str) -> None:
        with self._lock:
            self._consecutive += 1
            self._last_error = error
            self._probing = False
            if self._state == "half_open" or (
                self._state == "closed" and self._consecutive >= self.failures
            ):
                self._opened_at = self.clock()
                self._move("open")

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._since_wall = time.time()
        self.transitions.append(state)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state == "open" and self.clock() >= self._opened_at + self.reset_s:
                return "half_open"
            return self._state

    def health(self) -> TeacherHealth:
        state = self.state
        with self._lock:
            return TeacherHealth(
                teacher_id=self.teacher_id,
                state=state,
                since=self._since_wall,
                consecutive_failures=self._consecutive,
                last_error=self._last_error,
            )


class Bucket:
    """A token bucket refilled at ``per_min`` per minute, holding at most one minute's worth."""

    def __init__(self, per_min: float, clock: Clock = time.monotonic) -> None:
        if per_min <= 0:
            raise ValueError(f"a budget must be > 0 per minute, got {per_min}")
        self.per_min = per_min
        self.clock = clock
        self._level = per_min
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._level = min(self.per_min, self._level + (now - self._at) * self.per_min / 60.0)
        self._at = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` can be spent (0 now). An amount over one minute's worth
        waits for a full bucket, then may overdraw it."""
        self._refill()
        need = min(amount, self.per_min) - self._level
        return 0.0 if need <= 0 else need * 60.0 / self.per_min

    def spend(self, amount: float) -> None:
        self._refill()
        self._level -= amount


class Budget:
    """Labels per minute and tokens per minute (either may be None: unbounded), thread-safe.
    ``acquire`` blocks until one more request fits both; ``settle`` charges its real tokens."""

    def __init__(
        self,
        labels_per_min: float | None,
        tokens_per_min: float | None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.labels = None if labels_per_min is None else Bucket(labels_per_min, clock)
        self.tokens = None if tokens_per_min is None else Bucket(tokens_per_min, clock)
        self.sleep = sleep
        self._lock = threading.Lock()
        self._mean_tokens = 0.0  # running mean of tokens per request: the next one's estimate
        self._seen = 0

    def wait_s(self) -> float:
        with self._lock:
            waits = [0.0]
            if self.labels is not None:
                waits.append(self.labels.wait_s(1))
            if self.tokens is not None:
                waits.append(self.tokens.wait_s(self._mean_tokens))
            return max(waits)

    def acquire(self, stop: Callable[[], bool] = lambda: False) -> float:
        """Wait until one request fits; returns the seconds waited."""
        waited = 0.0
        while (wait := self.wait_s()) > 0 and not stop():
            step = min(wait, 0.5)
            self.sleep(step)
            waited += step
        with self._lock:
            if self.labels is not None:
                self.labels.spend(1)
        return waited

    def settle(self, tokens: int) -> None:
        with self._lock:
            self._seen += 1
            self._mean_tokens += (tokens - self._mean_tokens) / min(self._seen, 20)
            if self.tokens is not None:
                self.tokens.spend(tokens)
