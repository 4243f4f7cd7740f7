"""Chaos under load, in one run: ``python -m bench.chaos`` (``make bench-chaos``).

Clients post ``/v1/predict`` steadily and rate every answer (``/v1/feedback``) while, in turn,
a part of the live loop is killed as a crash would kill it:

- a Serve replica (``ray.kill``: Serve's controller starts another);
- the labeler, the example store, and the scheduler mid-rollout (``ray.kill`` with restart: Ray
  restarts the actor and sends its ``run`` loop again, ``cli.launcher._start_actors``);
- the embedded broker (SIGKILL; ``services.broker.Supervisor`` restarts it and its topics).

For each: failed predictions (goal: none beyond the requests in flight on a killed replica),
accepted feedback lost (a 202 whose request id never reaches the store; goal 0), and seconds
until the loop labels and stores again; for the scheduler, also until its rollout, read back
from the registry, decides again. Writes ``bench/results/chaos.json`` and ``.md``; the
integration test ``tests/integration/test_zero_loss_under_kills.py`` runs the same phases.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.harness import bench_settings, markdown_table, write_results
from feedback.examples import prediction_time, read_kind

KINDS = ("replica", "labeler", "store", "scheduler", "broker")


@dataclass
class Load:
    """``clients`` threads: predict one text, rate the answer, again, until ``stop``."""

    url: str
    clients: int = 4
    pause_s: float = 0.2  # between one client's requests: ~15 texts/s in all, as a quiet service
    predictions: list[tuple[float, int]] = field(default_factory=list)  # (wall s, status)
    accepted: list[tuple[float, str]] = field(default_factory=list)  # (wall s, request id)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.threads = [
            threading.Thread(target=self._client, args=(k,), daemon=True)
            for k in range(self.clients)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def _client(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                text = f"chaos {k}-{i}: {'a lovely film' if i % 2 else 'a dull film'}"
                status, answer = self._predict(client, text)
                self.predictions.append((time.time(), status))
                if answer is not None:
                    self._rate(client, answer, i)
                time.sleep(self.pause_s)

    def _predict(self, client: httpx.Client, text: str) -> tuple[int, dict[str, Any] | None]:
        try:
            r = client.post("/v1/predict", json={"text": text})
        except httpx.HTTPError:
            return 0, None
        return r.status_code, r.json()["predictions"][0] if r.is_success else None

    def _rate(self, client: httpx.Client, answer: dict[str, Any], i: int) -> None:
        body = {
            "request_id": answer["request_id"],
            "feedback_token": answer["feedback_token"],
            "rating": 1 + i % 5,
        }
        try:
            r = client.post("/v1/feedback", json=body)
        except httpx.HTTPError:
            return
        if r.status_code == 202:
            self.accepted.append((time.time(), answer["request_id"]))

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@dataclass(frozen=True)
class Phase:
    kind: str
    failed_predictions: int
    predictions: int
    feedback_accepted: int
    feedback_lost: int
    labels_again_s: float | None  # first label stored of a text predicted after the kill
    stored_again_s: float | None  # first feedback row stored of feedback posted after the kill
    decided_again_s: float | None = None  # scheduler: its rollout advanced or ended again
    detail: str = ""


def kill(loop: Any, kind: str) -> str:
    """Kill one part of ``loop`` (a ``cli.launcher.Running``) as a crash would."""
    import ray

    if kind == "replica":
        names = [
            a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::")
        ]  # fmt: skip
        victim = sorted(a["name"] for a in names)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"))
        return victim
    if kind == "broker":
        assert loop.broker is not None, "the broker is not embedded: kill it yourself"
        os.kill(loop.broker.child.proc.pid, signal.SIGKILL)
        return f"tansu pid {loop.broker.child.proc.pid}"
    ray.kill(getattr(loop, kind), no_restart=False)
    return kind


def _first_after(loop: Any, kind: str, since: float, timeout_s: float) -> float | None:
    """Seconds from ``since`` until the store holds a ``kind`` row of traffic after it: the
    label of a text predicted after ``since``, or feedback posted after it. A row that was in
    flight at the kill does not count, so this is the loop's recovery, not its backlog."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = read_kind(loop.settings.paths.store_dir, kind, written_after=since)
        if not rows.empty:
            made = prediction_time(rows) if kind == "labels" else rows["ts"].astype(float)
            if bool((made > since).any()):
                return time.time() - since
        time.sleep(0.5)
    return None


def _start_rollout(loop: Any) -> int:
    """Submit a copy of the current student (it passes the gate); returns the candidate."""
    import ray

    from training.registry import Registry

    registry = Registry(loop.settings.paths.registry_dir)
    current = registry.current()
    assert current is not None
    source = registry.local_dir(current, loop.settings.paths.model_cache_path())
    report = ray.get(loop.scheduler.submit.remote(str(source), "bench: chaos"), timeout=300)
    running = registry.rollout()
    assert running is not None, report
    return running.candidate


def _decided_after(loop: Any, candidate: int, since: float, timeout_s: float) -> float | None:
    """Seconds from ``since`` until the registry's history shows the rollout of ``candidate``
    move on: into canary, widened, promoted or rolled back."""
    from training.registry import Registry

    registry = Registry(loop.settings.paths.registry_dir)
    moves = {"canary", "widened", "promoted", "rolled_back"}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for event in registry.history():
            if event.version == candidate and event.event in moves and event.ts > since:
                return event.ts - since
        time.sleep(0.5)
    return None


def run_phase(loop: Any, load: Load, kind: str, settle_s: float, timeout_s: float) -> Phase:
    """Kill ``kind`` under ``load``; wait until the loop labels and stores again (and, for the
    scheduler, its rollout decides); then count what failed and what was lost."""
    candidate = _start_rollout(loop) if kind == "scheduler" else None
    start = time.time()
    time.sleep(settle_s)  # traffic before the kill
    killed_at = time.time()
    detail = kill(loop, kind)
    labels = _first_after(loop, "labels", killed_at, timeout_s)
    stored = _first_after(loop, "feedback", killed_at, timeout_s)
    decided = None if candidate is None else _decided_after(loop, candidate, killed_at, timeout_s)
    time.sleep(settle_s)  # traffic after the recovery
    end = time.time()
    return _count(loop, load, kind, (start, end), labels, stored, decided, detail)


def _count(
    loop: Any,
    load: Load,
    kind: str,
    window: tuple[float, float],
    labels: float | None,
    stored: float | None,
    decided: float | None,
    detail: str,
) -> Phase:
    start, end = window
    answered = [s for t, s in list(load.predictions) if start <= t < end]
    accepted = {rid for t, rid in list(load.accepted) if start <= t < end}
    deadline = time.time() + 60  # the store writes what it consumed within its flush period
    missing = accepted
    while missing and time.time() < deadline:
        feedback = read_kind(loop.settings.paths.store_dir, "feedback", ["request_id"])
        missing = accepted - set(feedback["request_id"]) if not feedback.empty else accepted
        time.sleep(1)
    return Phase(
        kind, sum(s != 200 for s in answered), len(answered), len(accepted), len(missing),
        labels, stored, decided, detail,
    )  # fmt: skip


def table(phases: list[Phase]) -> str:
    def s(v: float | None) -> str:
        return "never" if v is None else f"{v:.1f}"

    rows = [
        [p.kind, f"{p.failed_predictions} / {p.predictions}",
         f"{p.feedback_lost} / {p.feedback_accepted}", s(p.labels_again_s), s(p.stored_again_s),
         "" if p.kind != "scheduler" else s(p.decided_again_s)]
        for p in phases
    ]  # fmt: skip
    head = [
        "killed", "failed predictions", "feedback lost / accepted", "labels again (s)",
        "stores again (s)", "rollout decides again (s)",
    ]  # fmt: skip
    return markdown_table(head, rows)


def main() -> None:
    from cli.launcher import up
    from distillery.settings import RolloutSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    args = parser.parse_args()
    settings = bench_settings("chaos", sample_rate=0.5)
    settings = settings.model_copy(
        update={"rollout": RolloutSettings(shadow_s=20, canary_s=30, max_stage_s=120)}
    )
    loop = up(settings)
    load = Load(loop.api_url).start()
    try:
        phases = [run_phase(loop, load, k, args.settle_s, args.timeout_s) for k in KINDS]
    finally:
        load.end()
        loop.stop()
    md = table(phases)
    print(md)
    write_results("chaos", {"phases": [asdict(p) for p in phases], "settle_s": args.settle_s}, md)


if __name__ == "__main__":
    main()
