"""``cli.demo.wait_for_round``: a phase's round is the first that read a label newer than the
phase's traffic, and it has ended only once its rollout has; a round that started earlier (the
e2e test met a movies round taken for the tweets phase's) is not the phase's."""

from __future__ import annotations

import json
from typing import Any

import httpx

from cli.demo import NO_ROUND, RoundEnd, wait_for_round
from distillery.vader import VaderRow
from tests.unit.test_cli import STATUS

SINCE = 5_000.0  # when the phase's traffic had all been sent
TRAFFIC = [VaderRow("a fine film", "positive", "movies", 2.1)]


def _round(version: int, window_end_ts: float, outcome: str = "shadow") -> dict[str, Any]:
    return STATUS["last_round"] | {"version": version, "window_end_ts": window_end_ts,
                                   "outcome": outcome}  # fmt: skip


def _client(states: list[dict[str, Any]], seen: list[str]) -> httpx.Client:
    """Answers ``/v1/status`` with each of ``states`` in turn (the last one forever); the
    traffic that flows meanwhile is recorded and refused."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path != "/v1/status":
            return httpx.Response(503)
        state = states.pop(0) if len(states) > 1 else states[0]
        if "status" in state:
            return httpx.Response(state["status"])
        return httpx.Response(200, content=json.dumps(STATUS | state))

    return httpx.Client(base_url="http://loop", transport=httpx.MockTransport(answer))


def test_the_phase_round_is_the_first_that_read_the_phases_labels_once_its_rollout_ends() -> None:
    seen: list[str] = []
    earlier = _round(4, SINCE - 30)  # trained before the phase's traffic was labelled
    ours = _round(5, SINCE + 2)
    states = [
        {"last_round": earlier, "rollout": None, "current_version": 4, "round_running": False},
        {"status": 503},  # the server busy: try again
        {"last_round": earlier, "rollout": None, "current_version": 4, "round_running": True},
        {"last_round": ours, "rollout": STATUS["rollout"] | {"candidate": 5, "stable": 4}},
        {"last_round": ours, "rollout": None, "current_version": 5, "round_running": True},
    ]
    ended, _ = wait_for_round(_client(states, seen), SINCE, 10, TRAFFIC, 0.0, poll_s=0.3)
    assert ended == RoundEnd(5, "promoted", "v5 promoted")
    assert seen.count("/v1/status") == 5  # not the earlier round, nor ours mid-rollout
    assert "/v1/predict" in seen  # traffic flowed while it waited


def test_a_rejected_round_and_no_round_are_told_apart() -> None:
    rejected = _round(5, SINCE + 2, "rejected") | {
        "gate": {"passed": False, "reason": "agreement 0.6 < 0.7"},
        "reason": "agreement 0.6 < 0.7",
    }
    state = {"last_round": rejected, "rollout": None, "current_version": 4}
    ended, _ = wait_for_round(_client([state], []), SINCE, 10, TRAFFIC, 0.0, poll_s=0.1)
    assert ended == RoundEnd(5, "rejected", "v5 rejected (agreement 0.6 < 0.7)")
    only_earlier = {"last_round": _round(4, SINCE - 1), "rollout": None, "current_version": 4}
    ended, waited = wait_for_round(_client([only_earlier], []), SINCE, 1, TRAFFIC, 0.0, 0.2)
    assert ended == NO_ROUND and ended.version is None and waited >= 1
