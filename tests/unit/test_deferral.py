"""A round whose holdout is too small for the gate is not trained: the scheduler defers it,
starts no cooldown, disarms nothing, and tries again once about enough new labels arrived
(``training.gate.TooFewHeldOut``; CI, stop 30, trained a movies candidate on 60 labels that the
gate then rejected for a 9-row holdout)."""

from __future__ import annotations

import pickle
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from distillery.contracts import RoundReport, TriggerRecord
from distillery.settings import GateSettings, SchedulerSettings, Settings
from monitoring.scheduler import Scheduler
from monitoring.triggers import TriggerState
from training.gate import TooFewHeldOut, check_holdout


def test_too_few_held_out_rows_name_the_shortfall_and_survive_pickling() -> None:
    check_holdout(10, GateSettings(min_holdout=10), 0.2)  # enough: nothing raised
    with pytest.raises(TooFewHeldOut) as caught:
        check_holdout(9, GateSettings(min_holdout=10), 0.2)
    short = caught.value
    assert short.more_labels == 5  # one row short at a 0.2 holdout: about five labels
    assert str(short).startswith("holdout has 9 rows, need 10 (DISTILLERY_GATE_MIN_HOLDOUT)")
    again = pickle.loads(pickle.dumps(short))  # as Ray sends it to `distillery retrain`
    assert (type(again), str(again), again.more_labels) == (TooFewHeldOut, str(short), 5)


class _Scheduler(Scheduler):
    """The real ``tick`` and ``retrain`` over a store that only counts labels."""

    def __init__(self, rounds: list[Any]) -> None:  # no Ray, registry or watch
        self.settings = Settings(
            scheduler=SchedulerSettings(min_new_labels=60, cooldown_minutes=30)
        )
        self.task = SimpleNamespace(kind="classify")
        self.registry = SimpleNamespace(rollout=lambda: None, current=lambda: 1)
        self.promotion = SimpleNamespace(tick=lambda round_running: None)
        self._round_lock, self._metrics, self.signals = threading.Lock(), None, None
        self.trigger_state, self.deferred, self.last_round, self.last_error = (
            TriggerState(),
            None,
            None,
            None,
        )
        self.labels, self.rounds, self.tried = 0, rounds, 0

    def _since_last_round(self) -> tuple[int, float]:
        return self.labels, 1.0

    def _round(self, reason: str, trigger: TriggerRecord) -> RoundReport:
        self.tried += 1
        outcome = self.rounds.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _after_round(self, report: RoundReport) -> None:
        pass


def test_a_deferred_round_waits_for_labels_without_a_cooldown() -> None:
    report = RoundReport.model_construct(outcome="promoted", version=2)
    scheduler = _Scheduler([TooFewHeldOut(9, 10, 0.2), report])
    scheduler.labels = 60  # the volume trigger fires
    assert scheduler.tick() is False and scheduler.tried == 1
    assert scheduler.deferred is not None and scheduler.deferred.retry_at_labels == 65
    assert scheduler.deferred.reason.startswith("volume: 60 new labels"), scheduler.deferred
    assert scheduler.trigger_state == TriggerState()  # no cooldown began
    assert scheduler.last_error is None and scheduler.last_round is None
    scheduler.labels = 64
    assert scheduler.tick() is False and scheduler.tried == 1  # not tried again yet
    scheduler.labels = 65  # within the 30 min cooldown a failed round would have started
    assert scheduler.tick() is True and scheduler.tried == 2
    assert scheduler.deferred is None and scheduler.last_round is report
    assert scheduler.trigger_state.last_round_at is not None  # the round began a cooldown
