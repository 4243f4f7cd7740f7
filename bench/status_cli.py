"""``distillery status`` against a running loop: is it under a second, and where does it go?

Runs the real command (a fresh interpreter each time, as an operator types it) ``--runs`` times
against ``--url`` and times, in the same run: the whole command and the API's ``GET /v1/status``
alone (the scheduler's answer through Serve), each under three loads, and the command's imports
alone (``python -c``). The loads, one after the other:

- ``idle``: nothing but the loop's own ticks;
- ``traffic``: ``--rate`` texts/s posted one per request (``bench.soak.Steady``: 5% rated);
- ``round``: the same traffic while a distillation round runs (``retrain`` on the scheduler, the
  busiest the loop gets: training takes both of this machine's cores).

The first measurement (2026-12-01, 1.054 s) was taken on a loop that was busy with something
unrecorded; an idle loop answered in 0.325 s on 2026-12-07. The goal (issue 15) is the whole
command under 1 s (p50) under every load. Writes ``bench/results/status_cli.{json,md}``.

    python -m bench.status_cli --url http://127.0.0.1:8000 [--runs 10] [--rate 10]

The ``round`` load joins the loop's Ray cluster as ``distillery retrain`` does
(``cli.main.running_scheduler``); ``--no-round`` leaves it out.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import markdown_table, texts, write_results
from bench.soak import Steady
from cli.main import running_scheduler
from distillery.settings import PathSettings

BIN = Path(sys.executable).parent
GOAL_S = 1.0
LOADS = ("idle", "traffic", "round")


def _timed(
    fn: Callable[[], None], runs: int, until: Callable[[], bool] | None = None
) -> list[float]:
    """``runs`` timings of ``fn``; with ``until``, stops early once it says so (a round ended)."""
    out = []
    for _ in range(runs):
        if until is not None and until():
            break
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _stats(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"p50_s": float("nan"), "max_s": float("nan"), "n": 0}
    return {
        "p50_s": round(statistics.median(values), 3),
        "max_s": round(max(values), 3),
        "n": len(values),
    }


def _probes(url: str) -> tuple[Callable[[], None], Callable[[], None]]:
    command = [str(BIN / "distillery"), "status", "--url", url]

    def whole() -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def api() -> None:
        with urllib.request.urlopen(f"{url}/v1/status", timeout=30) as answer:
            answer.read()

    return whole, api


def _round_started(timeout_s: float = 900) -> Callable[[], bool]:
    """Start a round on the loop's scheduler, once no rollout holds it back (the traffic moves
    a rollout on); returns "has it ended?"."""
    import ray

    scheduler = running_scheduler()
    deadline, reason = time.monotonic() + timeout_s, "bench.status_cli: status during a round"
    while True:
        running: ray.ObjectRef[Any] = scheduler.retrain.remote(reason)
        ready, _ = ray.wait([running], timeout=3)
        if not ready:  # training
            return lambda: bool(ray.wait([running], timeout=0)[0])
        try:
            ray.get(running)
        except Exception as exc:  # refused while a rollout runs: wait for its verdict
            if "rolling out" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(10)


def measure(url: str, runs: int, rate: float, with_round: bool) -> dict[str, Any]:
    whole, api = _probes(url)
    loads: dict[str, dict[str, Any]] = {}
    loads["idle"] = {"command": _stats(_timed(whole, runs)), "api": _stats(_timed(api, runs))}
    traffic = Steady(url, rate, texts(2_000, PathSettings().data_dir))
    stop = threading.Event()
    sender = threading.Thread(target=traffic.run, args=(stop,), daemon=True)
    sender.start()
    try:
        time.sleep(5)  # the traffic under way
        loads["traffic"] = {
            "command": _stats(_timed(whole, runs)),
            "api": _stats(_timed(api, runs)),
        }
        if with_round:
            ended = _round_started()
            loads["round"] = {
                "command": _stats(_timed(whole, runs, until=ended)),
                "api": _stats(_timed(api, runs, until=ended)),
            }
    finally:
        stop.set()
        sender.join(timeout=30)

    def imports() -> None:
        probe = "import cli.main, cli.api_client, cli.status"
        subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)

    return {
        "url": url,
        "runs": runs,
        "rate": rate,
        "goal_s": GOAL_S,
        "met": met(loads),
        "loads": loads,
        "imports": _stats(_timed(imports, runs)),
        "traffic_sent": traffic.sent,
        "traffic_failed": traffic.failed,
    }


def met(loads: dict[str, dict[str, Any]]) -> bool:
    """The goal: the command's p50 under ``GOAL_S`` under every load that was measured (a round
    that ended before the first run measured nothing), and at least one load measured."""
    p50s = [load["command"]["p50_s"] for load in loads.values() if load["command"]["n"]]
    return bool(p50s) and max(p50s) < GOAL_S


def table(result: dict[str, Any]) -> str:
    rows = []
    for name in LOADS:
        load = result["loads"].get(name)
        if load is None:
            continue
        figures = [load[part][key] for part in ("command", "api") for key in ("p50_s", "max_s")]
        rows.append([name, *figures, load["command"]["n"]])
    head = markdown_table(
        ["load", "command p50 s", "command max s", "API p50 s", "API max s", "runs"], rows
    )
    imports = result["imports"]
    verdict = "met" if result["met"] else "not met"
    return (
        head
        + f"\nThe command's imports alone: p50 {imports['p50_s']} s (max {imports['max_s']}). "
        + f"Traffic: {result['rate']:g} texts/s ({result['traffic_sent']} sent, "
        + f"{result['traffic_failed']} failed).\n"
        + f"Goal: the whole command under {GOAL_S:g} s (p50) under every load: {verdict}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="texts/s under load")
    parser.add_argument("--no-round", action="store_true", help="leave out the round load")
    args = parser.parse_args()
    result = measure(args.url.rstrip("/"), args.runs, args.rate, not args.no_round)
    write_results("status_cli", result, table(result))
    print(table(result))


if __name__ == "__main__":
    main()
