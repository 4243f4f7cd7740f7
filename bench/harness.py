"""What the benchmarks share: a stack of their own, the ``wrk`` load generator, texts, results.

Each benchmark keeps its state under ``state/bench-<name>`` (bootstrapped once, reused), serves on
free ports, and writes ``bench/results/<name>.json`` plus a markdown table beside it.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillery.settings import PathSettings, SchedulerSettings, ServeSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WRK_SCRIPT = ROOT / "bench" / "wrk_post.lua"


# Nothing goes to the teacher: it would share the two cores with what is measured.
NO_SAMPLING = {"sample_rate": 0.0, "sample_margin_below": 0.0, "sample_novelty_above": 1e9}


def bench_settings(name: str, **serve: Any) -> Settings:
    """Settings for a benchmark's own stack: its own state, free ports, no scheduler rounds,
    and one drift measurement at start only (``wait_measured``): an Evidently report in the
    middle of a load level took half a core from the replicas (py-spy, issue 18)."""
    from services.broker import free_port

    paths = PathSettings(state_dir=ROOT / "state" / f"bench-{name}")
    return Settings(
        paths=paths,
        serve=ServeSettings(port=free_port(), metrics_export_port=free_port(), **serve),
        scheduler=SchedulerSettings(enabled=False, drift_every_s=86_400),
    )


def wait_measured(running: Any, timeout_s: float = 300) -> None:
    """Until the scheduler's first drift measurement is done (it runs on its first tick)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.get(running.scheduler.status.remote()).signals is not None:
            return
        time.sleep(2)
    raise TimeoutError(f"the scheduler measured nothing in {timeout_s:g}s")


def texts(n: int, data_dir: Path, seed: int = 0) -> list[str]:
    """``n`` real sentences from the four VADER domains, shuffled (fetched if missing)."""
    from distillery import vader

    vader.fetch(data_dir)
    rows = [row.text for domain in vader.DOMAINS for row in vader.load(domain, data_dir)]
    random.Random(seed).shuffle(rows)
    return rows[:n]


@dataclass(frozen=True)
class LoadResult:
    """One ``wrk`` run: throughput (requests/s), latency percentiles (ms) and failed requests."""

    clients: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    def row(self) -> dict[str, Any]:
        return asdict(self)


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    return path


def run_wrk(url: str, bodies: Path, clients: int, seconds: float) -> LoadResult:
    """``clients`` keep-alive connections on one wrk thread POST ``bodies`` (a JSON body a line)."""
    cmd = [
        require_wrk(), "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url, "--", str(bodies),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)
    match = re.search(r"WRK_JSON (\{.*\})", out.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(match.group(1))
    duration_s = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        clients=clients,
        seconds=round(duration_s, 2),
        requests=raw["requests"],
        rps=round(raw["requests"] / duration_s, 1),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
    )


def scrape(metrics_url: str, name: str) -> float:
    """The sum of every series of metric ``name`` on a Prometheus text endpoint (0 if none)."""
    import httpx

    body = httpx.get(metrics_url, timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(body))


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def provenance() -> dict[str, str]:
    """What produced a result: the command, the commit (``+dirty`` with uncommitted changes
    outside ``bench/results``, which a run of several benchmarks rewrites) and the UTC date, so
    a table in the docs names the code it measured."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"):
        commit += "+dirty"
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else Path(sys.argv[0]).name
    command = " ".join([program, *sys.argv[1:]])
    when = time.strftime("%Y-%m-%d", time.gmtime())
    return {"commit": commit, "command": command, "date": when}


def write_results(name: str, payload: dict[str, Any], table: str) -> tuple[Path, Path]:
    """``bench/results/<name>.json`` and ``.md``, each naming its command and commit; returns
    both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    made = provenance()
    payload = {**payload, "provenance": made}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    footer = f"\n_`{made['command']}` at commit `{made['commit']}`, {made['date']}._\n"
    md_path.write_text(table.rstrip("\n") + "\n" + footer)
    return json_path, md_path


def publish(name: str, payload: dict[str, Any], table: str) -> None:
    """``write_results``, then the table and where it went, on stdout."""
    json_path, md_path = write_results(name, payload, table)
    print(table)
    print(f"wrote {json_path} and {md_path}")


def between_markers(page: str, name: str, table: str) -> str:
    """``page`` with the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced
    by ``table``: how a docs page holds a table generated from ``bench/results``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in page or end not in page:
        raise ValueError(f"the page has no {start} … {end} markers")
    head, rest = page.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}{end}{tail}"
