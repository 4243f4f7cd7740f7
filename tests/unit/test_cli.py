"""The ``distillery`` command: ``status`` over HTTP (readable and ``--json``), and every command
reading the same settings as ``up`` (``DISTILLERY_STATE_DIR``, ``…_SERVE_PORT``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.status import summary
from monitoring.status import Status
from training.registry import Registry, VersionMeta

CHECK = {"name": "teacher_agreement", "state": "pass", "candidate": 0.91, "stable": 0.9,
         "limit": 0.86, "detail": "agreement 0.91 ≥ 0.86"}  # fmt: skip
STATUS: dict[str, Any] = {
    "current_version": 3,
    "versions": [1, 2, 3, 4],
    "replicas": {"r1": 3, "r2": 3},
    "rollout": {
        "id": "r-4", "candidate": 4, "stable": 3, "stage": "canary", "paused": False,
        "started_at": 990.0, "stage_started_at": 1_000.0,
    },
    "rollout_verdict": {
        "action": "wait", "reason": "canary: 20s in, waiting for evidence for negative_feedback",
        "checks": [CHECK], "stable": {}, "candidate": {},
    },
    "labels_since_last_round": 412,
    "minutes_since_last_round": 7.25,
    "round_running": False,
    "round_progress": None,
    "last_round": {
        "version": 4, "parent": 3, "promoted": False, "outcome": "shadow",
        "reason": "all checks passed", "gate": {"passed": True, "reason": "all checks passed"},
        "train_metrics": {}, "rows": 300,
        "seconds": 12.0, "trigger": {"kind": "drift", "value": 0.6, "reason": "drift 0.60"},
    },
    "drift": {"version": 3, "checked_at": 1_000.0, "share": {"embedding": 0.625, "text": 0.1},
              "drifted": {}, "reference_rows": 200, "current_rows": 100, "method": "psi"},
    "signals": None,
    "trigger": {"fire": False, "kind": None, "value": None, "cooldown_until": None,
                "disarmed": [], "reason": "no trigger: labels 412 < 400?"},
    "teacher": {"kind": "llm", "teacher_id": "llm:qwen:abc", "state": "down",
                "last_error": "refused", "note": "the teacher is now llm:qwen:abc",
                "serving_version_learnt_from": {"embedding:minilm:1": 300}, "changed": True,
                "old_labels": "keep"},
    "trust": None,
    "cascade": {"min_confidence": 0.0, "offered": None, "version": 3},
    "last_error": None,
}  # fmt: skip


def _status(**changes: Any) -> Status:
    return Status.model_validate(STATUS | changes)


def test_summary_names_every_part_of_the_loop() -> None:
    text = summary(_status(), now=1_030.0)
    assert "serving   v3 (replicas answer with v3; 4 versions registered)" in text
    assert "rollout   v4 vs v3: canary, stage began 30 s ago" in text
    assert "pass    agreement 0.91 ≥ 0.86" in text
    assert "412 since the last round (7.2 min ago)" in text
    assert "last round v4 (drift): shadow" in text
    assert "embedding 0.62, text 0.10" in text
    assert "teacher   llm:qwen:abc: down (last error: refused)" in text
    assert "the teacher is now llm:qwen:abc" in text


def _key(source: str, reliability: float, weight: float, trusted: bool, above: bool) -> dict:
    return {
        "source": source, "reliability": reliability, "weight": weight, "agreements": 0.0,
        "comparisons": 10.0, "labels": 42, "trusted": trusted, "above_floor": above,
    }  # fmt: skip


def test_summary_ranks_the_keys_and_says_what_each_counts_for() -> None:
    trust = {
        "mode": "measured",
        "teacher": _key("teacher", 0.31, 0.0, False, False) | {"comparisons": 120.0},
        "keys": [
            _key("ops", 0.97, 1.0, True, True),
            _key("app", 0.9, 0.8, False, True),
            _key("new", 0.7, 0.4, False, False),
            _key("liar", 0.05, 0.0, False, False),
        ],
    }
    text = summary(_status(trust=trust), now=1_030.0)
    assert "trust     measured: teacher reliability 0.31 (weight 0.00, 120 human labels)" in text
    lines = [line for line in text.splitlines() if line.startswith("  key ")]
    assert [line.split()[1] for line in lines] == ["ops", "app", "new", "liar"]
    assert [line.split()[-1] for line in lines] == ["trusted", "reliable", "weighed", "ignored"]


def test_summary_shows_an_ensembles_members_with_their_measured_shares() -> None:
    trust = {
        "mode": "measured",
        "teacher": _key("teacher", 0.7, 0.6, False, False),
        "keys": [],
        "members": [
            _key("llm:qwen:abc", 0.26, 0.01, False, False) | {"share": 0.02},
            _key("minilm:def", 0.69, 0.58, False, False) | {"share": 0.98},
        ],
    }
    lines = summary(_status(trust=trust), now=1_030.0).splitlines()
    members = [line.split() for line in lines if line.startswith("  member ")]
    assert [(m[1], m[-1]) for m in members] == [("llm:qwen:abc", "0.02"), ("minilm:def", "0.98")]
    trust["members"] = [_key("llm:qwen:abc", 0.8, 0.6, False, False)]  # too few human labels
    assert "task file's weight" in summary(_status(trust=trust), now=1_030.0)


def test_summary_offers_the_cascade_threshold_with_its_guarantee() -> None:
    offered = {"threshold": 0.8312, "coverage": 0.71, "accuracy": 0.962, "lower_bound": 0.941,
               "target": 0.931, "delta": 0.05, "rows": 420}  # fmt: skip
    cascade = {"min_confidence": 0.0, "offered": offered, "version": 3}
    text = summary(_status(cascade=cascade), now=1_030.0)
    line = next(line for line in text.splitlines() if line.startswith("cascade"))
    assert "off by default" in line and "min_confidence 0.831" in line and "v3" in line
    assert "≥ 0.931 accuracy" in line and "probability 0.95" in line and "71% of 420" in line
    none = cascade | {"offered": offered | {"threshold": None}, "min_confidence": 0.9}
    text = summary(_status(cascade=none), now=1_030.0)
    assert "default min_confidence 0.9" in text and "the teacher would answer everything" in text


def test_summary_of_a_fresh_loop_says_what_is_not_there_yet() -> None:
    fresh = {"rollout": None, "rollout_verdict": None, "last_round": None, "drift": None,
             "trigger": None, "current_version": 1, "versions": [1]}  # fmt: skip
    text = summary(_status(**fresh))
    assert "rollout   none" in text and "drift     not measured yet" in text
    assert "triggers  not decided yet" in text


def test_summary_says_a_deferred_round_waits_and_for_how_many_labels() -> None:
    wait = {
        "reason": "volume: 60 new labels ≥ 60; holdout has 9 rows, need 10",
        "retry_at_labels": 65,
    }
    text = summary(_status(deferred=wait))
    assert "round     deferred (volume: 60 new labels ≥ 60; holdout has 9 rows" in text
    assert "next try at 65 labels" in text
    assert "deferred" not in summary(_status())


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(STATUS).encode() if self.path == "/v1/status" else b"{}"
        self.send_response(200 if self.path == "/v1/status" else 404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """/v1/admin/pause: 409 (no rollout); /v1/admin/promote: the result. Both note what
        they were sent."""
        length = int(self.headers.get("content-length", 0))
        SEEN.append(
            (self.path, self.headers.get("authorization"), json.loads(self.rfile.read(length)))
        )
        if self.path == "/v1/admin/pause":
            code, body = 409, {"detail": "no rollout in progress: nothing to pause"}
        else:
            code, body = 200, {"ok": True, "detail": "v2 promoted", "current_version": 2}
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:
        pass


SEEN: list[tuple[str, str | None, dict[str, Any]]] = []


@pytest.fixture()
def api() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_status_reads_the_api_at_the_configured_port_without_ray(api: int) -> None:
    """A fresh interpreter, as an operator runs it: DISTILLERY_SERVE_PORT picks the API, the
    answer is the summary (or the JSON), and Ray is never imported."""
    probe = (
        "import sys; from cli.main import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('RAY' if 'ray' in sys.modules else 'NO-RAY', code)"
    )
    env = {"DISTILLERY_SERVE_PORT": str(api), "PATH": "/usr/bin:/bin"}
    for args, expect in (([], "serving   v3"), (["--json"], '"current_version": 3')):
        out = subprocess.run(
            [sys.executable, "-c", probe, "status", *args],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert expect in out.stdout, out
        assert out.stdout.strip().endswith("NO-RAY 0"), out.stdout[-200:]


def test_status_without_a_running_api_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.broker import free_port

    port = free_port()
    monkeypatch.setenv("DISTILLERY_SERVE_PORT", str(port))
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert f"http://127.0.0.1:{port}" in result.output


def test_history_reads_the_configured_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "elsewhere"
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_text("w")
    registry = Registry(state / "registry")
    meta = registry.register(model, VersionMeta(version=0))
    registry.promote(meta.version, "history test")
    monkeypatch.chdir(tmp_path)  # ./state here is empty: only the setting finds the registry
    monkeypatch.setenv("DISTILLERY_STATE_DIR", str(state))
    result = CliRunner().invoke(app, ["history"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert [e["event"] for e in events] == ["registered", "promoted"]
    assert events[1]["reason"] == "history test"


def test_operator_actions_go_through_the_admin_api_with_the_state_dirs_token(
    api: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "operator_token").write_text("s3cret\n")
    monkeypatch.setenv("DISTILLERY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DISTILLERY_SERVE_PORT", str(api))
    SEEN.clear()
    promoted = CliRunner().invoke(app, ["promote", "2", "-r", "looks good"])
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.output)["detail"] == "v2 promoted"
    refused = CliRunner().invoke(app, ["pause", "-r", "e2e"])
    assert refused.exit_code == 1
    assert json.loads(refused.output) == {
        "ok": False,
        "detail": "no rollout in progress: nothing to pause",
        "current_version": None,
        "rollout": None,
    }
    assert SEEN == [
        ("/v1/admin/promote", "Bearer s3cret", {"reason": "CLI: looks good", "version": 2}),
        ("/v1/admin/pause", "Bearer s3cret", {"reason": "CLI: e2e"}),
    ]


def test_an_operator_action_without_a_token_names_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILLERY_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DISTILLERY_SERVE_OPERATOR_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["rollback"])
    assert result.exit_code == 2
    assert str(tmp_path / "operator_token") in result.output
    assert not (tmp_path / "operator_token").exists()  # only `up` makes one


def test_a_status_the_command_cannot_read_names_the_field(
    api: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.unit.test_cli as here

    broken = {k: v for k, v in STATUS.items() if k != "teacher"}
    monkeypatch.setattr(here, "STATUS", broken)
    monkeypatch.setenv("DISTILLERY_SERVE_PORT", str(api))
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "cannot read" in result.output and "teacher" in result.output
