"""Retraining triggers on a real shift, against a live loop of its own (real Serve, broker,
labeler, store and Evidently): v1 is distilled on VADER movie reviews; more unseen movie
reviews (steady traffic) fire no signal trigger; tweets (a shift) fire the drift trigger, on
the text statistics and the embedding alike. Volume and schedule triggers are set out of reach,
rounds are off (the test asks the scheduler to measure and decide), so only the signals can
fire.

Its own stack, module-scoped: this module runs before the package's shared ``loop`` starts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cli.launcher import Running, up
from distillery import vader
from distillery.settings import (
    GateSettings,
    MonitorSettings,
    PathSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
    TeacherSettings,
)
from monitoring.status import Measurement
from services.broker import free_port
from tests.conftest import DATA, TASK
from tests.integration.conftest import LoopSlot, send_until_labelled
from training.cycle import seed_texts

pytestmark = pytest.mark.integration
PHASE = 500  # texts per phase: the drift check's current window is exactly one phase


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, loop_slot: LoopSlot) -> Iterator[Running]:
    settings = Settings(
        paths=PathSettings(
            state_dir=tmp_path_factory.mktemp("trigger-state"), data_dir=DATA, task_file=TASK
        ),
        serve=ServeSettings(
            port=free_port(), metrics_export_port=free_port(), sample_rate=1.0, num_replicas=1
        ),
        # every text of a phase reaches the teacher: a burst of 500 must not meet the budget
        teacher=TeacherSettings(budget_per_min=60_000),
        scheduler=SchedulerSettings(
            enabled=False,
            seed_size=1_600,
            drift_every_s=3_600,
            poll_s=1,
            min_new_labels=100_000,
            interval_minutes=1e6,
            cooldown_minutes=0,
            min_labels_for_time_trigger=50,
            min_signal_labels=100,
        ),
        monitor=MonitorSettings(min_rows=100, current_rows=PHASE, signal_window_s=3_600),
        gate=GateSettings(min_holdout=5, first_version_min_agreement=0),
    )
    loop_slot.release()  # one loop at a time in this process
    running = up(settings)
    yield running
    running.stop()


def _phase(stack: Running, texts: list[str]) -> dict[str, Any]:
    """Send ``texts`` as traffic, wait until the teacher labelled them all, then measure."""
    import ray

    send_until_labelled(stack, texts, time.time(), len(texts), 300)
    measured: Measurement = ray.get(stack.scheduler.measure.remote())
    return measured


def test_a_shift_to_tweets_fires_a_signal_trigger_and_steady_movies_do_not(
    stack: Running,
) -> None:
    seen = set(seed_texts(stack.settings, stack.task))
    movies = [r.text for r in vader.load("movies", DATA) if r.text not in seen]
    tweets = [r.text for r in vader.load("tweets", DATA)]
    rng = random.Random(0)
    rng.shuffle(movies)
    rng.shuffle(tweets)
    limits = stack.settings.scheduler

    steady = _phase(stack, movies[:PHASE])
    signals, decision = steady.signals, steady.trigger
    print("steady movies:", signals, decision, steady.drift)
    assert signals.drift is not None and signals.disagreement is not None
    assert signals.drift < limits.drift_threshold, signals
    assert signals.disagreement < limits.disagreement_threshold, signals
    assert not decision.fire, decision
    assert decision.reason.startswith("no trigger"), decision

    shifted = _phase(stack, tweets[:PHASE])
    signals, decision = shifted.signals, shifted.trigger
    print("tweets:", signals, decision, shifted.drift)
    assert decision.fire, decision
    # the drift trigger itself (disagreement, checked first, measured .25 here against .35)
    assert decision.kind == "drift", decision
    assert shifted.drift is not None and steady.drift is not None
    shares = shifted.drift.share  # per kind: the share of its columns that drifted
    assert set(shares) == {"features", "embedding", "prediction"}, shifted.drift
    assert decision.value == max(shares.values()) >= limits.drift_threshold, shares
    # tweets are shorter and differently worded than movie reviews: the input drifts, in the
    # text statistics and in the student's embedding (measured .5 and .6; steady movies 0, 0)
    assert shares["features"] >= limits.drift_threshold, shares
    assert shares["embedding"] >= limits.drift_threshold, shares
    calm = steady.drift.share
    assert max(calm.values()) < limits.drift_threshold and calm["features"] == 0.0, calm
