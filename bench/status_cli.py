"""``distillery status`` against a running loop: is it under a second, and where does it go?

Runs the real command (a fresh interpreter each time, as an operator types it) ``--runs`` times
against ``--url`` and times, in the same run: the whole command, the API's ``GET /v1/status``
alone (the scheduler's answer through Serve), and the command's imports alone (``python -c``).
The goal (issue 15) is the whole command under 1 s. Writes
``bench/results/status_cli.{json,md}``.

    python -m bench.status_cli --url http://127.0.0.1:8000 [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.harness import markdown_table, write_results

BIN = Path(sys.executable).parent
GOAL_S = 1.0


def _timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def measure(url: str, runs: int) -> dict[str, object]:
    command = [str(BIN / "distillery"), "status", "--url", url]

    def whole() -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def api() -> None:
        with urllib.request.urlopen(f"{url}/v1/status", timeout=30) as answer:
            answer.read()

    def imports() -> None:
        probe = "import cli.main, cli.api_client, cli.status, distillery.settings"
        subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)

    rows = {
        name: _timed(fn, runs)
        for name, fn in (("command", whole), ("api", api), ("imports", imports))
    }
    stats = {
        name: {"p50_s": round(statistics.median(v), 3), "max_s": round(max(v), 3)}
        for name, v in rows.items()
    }
    return {
        "url": url,
        "runs": runs,
        "goal_s": GOAL_S,
        "met": stats["command"]["p50_s"] < GOAL_S,
        **stats,
    }


def table(result: dict[str, object]) -> str:
    rows = [
        [name, result[name]["p50_s"], result[name]["max_s"]]  # type: ignore[index]
        for name in ("command", "api", "imports")
    ]
    head = markdown_table(["`distillery status`", "p50 s", "max s"], rows)
    verdict = "met" if result["met"] else "not met"
    return head + f"\nGoal: the whole command under {GOAL_S:g} s (p50): {verdict}.\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    result = measure(args.url.rstrip("/"), args.runs)
    write_results("status_cli", result, table(result))
    print(table(result))


if __name__ == "__main__":
    main()
