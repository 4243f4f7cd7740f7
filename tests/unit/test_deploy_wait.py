"""``services.deploy``'s waits while Serve moves between two configs: an app whose details do
not list the student deployment yet (the scheduler's tick once failed on it with a
``KeyError``) means "not there yet", never an error and never "done"."""

from __future__ import annotations

from typing import Any

import pytest

from services import deploy


def _app(replicas: list[tuple[str, str]] | None) -> dict[str, Any]:
    if replicas is None:
        return {"status": "DEPLOYING", "deployments": {}}
    listed = [{"replica_id": r, "state": state} for r, state in replicas]
    config = {"deployment_config": {"user_config": None}, "replicas": listed}
    return {"status": "RUNNING", "deployments": {deploy.DEPLOYMENT: config}}


def test_an_unlisted_deployment_has_no_replicas_and_no_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deploy, "app_details", lambda url: _app(None))
    assert deploy.running_replicas("http://dash") is None
    assert deploy.deployed_version("http://dash") is None
    monkeypatch.setattr(deploy, "app_details", lambda url: {})
    assert deploy.running_replicas("http://dash") is None


def test_wait_serving_waits_until_serve_lists_the_replicas_and_they_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([_app(None), _app(None), _app([("a", "RUNNING"), ("b", "STARTING")])])
    monkeypatch.setattr(deploy, "app_details", lambda url: next(answers))
    monkeypatch.setattr(deploy.time, "sleep", lambda s: None)
    deploy.wait_serving("http://dash", 3, lambda: {"a": 3, "b": 2})  # b is not running yet
    with pytest.raises(StopIteration):
        next(answers)  # it asked until the replicas were listed, and no longer


def test_wait_serving_names_what_is_behind_when_it_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deploy, "app_details", lambda url: _app(None))
    monkeypatch.setattr(deploy.time, "sleep", lambda s: None)
    with pytest.raises(TimeoutError, match="Serve lists no replicas"):
        deploy.wait_serving("http://dash", 3, lambda: {}, timeout_s=0.01)
