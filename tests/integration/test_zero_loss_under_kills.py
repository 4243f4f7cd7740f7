"""The live loop under steady load survives a crash of each of its parts (``bench/chaos.py``'s
phases, shortened): a Serve replica, the labeler, the example store, and the scheduler in the
middle of a rollout. No prediction fails beyond those in flight on the killed replica, no
accepted feedback is lost, and the loop labels and stores again; the restarted scheduler reads
its rollout back from the registry and carries it on. (The broker: ``test_faults.py``.)

It kills parts of the loop the other modules share, so it spoils it: a module after it gets a
fresh one (``LoopSlot``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.chaos import Load, Phase, run_phase
from cli.launcher import Running
from tests.integration.conftest import LoopSlot

pytestmark = pytest.mark.integration
SETTLE_S, TIMEOUT_S = 6.0, 120.0


@pytest.fixture(scope="module", autouse=True)
def spoils_the_shared_loop(loop_slot: LoopSlot) -> Iterator[None]:
    yield
    loop_slot.spoil()


@pytest.fixture(scope="module")
def load(loop: Running) -> Iterator[Load]:
    running = Load(loop.api_url).start()
    yield running
    running.end()


def _survived(phase: Phase, may_fail: int = 0) -> None:
    assert phase.predictions > 20, phase  # the load kept flowing through the phase
    assert phase.failed_predictions <= may_fail, phase
    assert phase.feedback_accepted > 0 and phase.feedback_lost == 0, phase
    assert phase.labels_again_s is not None and phase.stored_again_s is not None, phase


def test_a_killed_replica_fails_only_its_requests_in_flight(loop: Running, load: Load) -> None:
    phase = run_phase(loop, load, "replica", SETTLE_S, TIMEOUT_S)
    _survived(phase, may_fail=load.clients)  # one request per client at a time, at most


@pytest.mark.parametrize("kind", ["labeler", "store"])
def test_a_killed_actor_is_restarted_and_loses_nothing(
    loop: Running, load: Load, kind: str
) -> None:
    _survived(run_phase(loop, load, kind, SETTLE_S, TIMEOUT_S))


def test_a_scheduler_killed_mid_rollout_carries_the_rollout_on(loop: Running, load: Load) -> None:
    import ray

    phase = run_phase(loop, load, "scheduler", SETTLE_S, TIMEOUT_S)
    _survived(phase)
    assert phase.decided_again_s is not None, phase  # the same rollout moved on after the kill
    status = ray.get(loop.scheduler.status.remote(), timeout=60)  # the restarted actor answers
    assert status.current_version is not None
