"""A soak run, not part of CI: ``python -m bench.soak --minutes 60`` (``make bench-soak``).

One stack of its own serves a steady rate of texts (``--rate`` per second, 5% of them rated)
for ``--minutes``. Every ``--every-s`` it samples the resident memory of every process of the
loop (read from ``/proc``: the raylet, GCS, each Ray actor and Serve replica by name, the broker,
the LLM server) and the labeler's lag (label written − prediction made, median of the labels
written since the last sample). Goals: flat memory and no growing lag. Writes
``bench/results/soak.json`` and ``.md``: per process, memory at the first and last sample and
the least-squares slope in MB per hour; the lag's first, last and slope.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness import bench_settings, markdown_table, texts, write_results
from feedback.examples import prediction_time, read_kind

NAMES = (  # a process's cmdline → its row (the first match)
    "raylet", "gcs_server", "ServeReplica", "ServeController", "ProxyActor", "haproxy",
    "Labeler", "ExampleStore", "Scheduler", "tansu", "llama_cpp", "dashboard",
)  # fmt: skip


def memory_by_process() -> dict[str, float]:
    """Resident MB per process of the loop, summed by name (two replicas: one row)."""
    out: dict[str, float] = defaultdict(float)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        name = next((n for n in NAMES if n in cmdline), None)
        if name is None and int(pid) == os.getpid():
            name = "driver (this benchmark)"
        if name is not None:
            out[name] += rss_mb(status)
    return dict(out)


def rss_mb(status: str) -> float:
    """Resident MB from the text of a ``/proc/<pid>/status`` (0 for a process without one)."""
    rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), 0)
    return int(rss) / 1024


def lag_s(store_dir: Path, since: float) -> float | None:
    """Median seconds from prediction to label over the labels written after ``since``."""
    labels = read_kind(store_dir, "labels", written_after=since)
    if labels.empty:
        return None
    return float(np.median(labels["ts"] - prediction_time(labels)))


@dataclass
class Steady:
    """Posts ``rate`` texts/s (one per request), rating 5% of the answers, until stopped."""

    url: str
    rate: float
    bodies: list[str]
    failed: int = 0
    sent: int = 0

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            start = time.monotonic()
            while not stop.is_set():
                self._one(client)
                ahead = start + self.sent / self.rate - time.monotonic()
                if ahead > 0:
                    stop.wait(ahead)

    def _one(self, client: httpx.Client) -> None:
        text = self.bodies[self.sent % len(self.bodies)]
        self.sent += 1
        try:
            r = client.post("/v1/predict", json={"text": text})
        except httpx.HTTPError:
            self.failed += 1
            return
        if r.status_code != 200:
            self.failed += 1
        elif self.sent % 20 == 0:
            answer = r.json()["predictions"][0]
            body = {k: answer[k] for k in ("request_id", "feedback_token")} | {"rating": 4}
            client.post("/v1/feedback", json=body)


def slope_per_hour(ts: list[float], values: list[float]) -> float:
    if len(ts) < 2:
        return 0.0
    return float(np.polyfit(np.array(ts) / 3600, np.array(values), 1)[0])


def summarise(samples: list[dict[str, Any]], settled_s: float) -> list[list[Any]]:
    """One row per process, then the lag: first, last, slope per hour over the whole run, and
    over the samples from ``settled_s`` on (once the replicas' join cache of unsampled requests
    has filled: it keeps each for ``store.join_window_s``, so it grows for that long by design);
    "—" when the run ended before."""
    ts = [s["ts"] for s in samples]
    late = [i for i, t in enumerate(ts) if t >= settled_s]
    rows = []
    for name in sorted({n for s in samples for n in s["memory_mb"]}):
        values = [s["memory_mb"].get(name, 0.0) for s in samples]
        after = (
            f"{slope_per_hour([ts[i] for i in late], [values[i] for i in late]):+.1f}"
            if len(late) >= 3 else "—"
        )  # fmt: skip
        rows.append([name, f"{values[0]:.0f}", f"{values[-1]:.0f}",
                     f"{slope_per_hour(ts, values):+.1f}", after])  # fmt: skip
    lags = [(s["ts"], s["lag_s"]) for s in samples if s["lag_s"] is not None]
    if lags:
        slope = slope_per_hour([t for t, _ in lags], [v for _, v in lags])
        rows.append(
            ["labeler lag (s)", f"{lags[0][1]:.1f}", f"{lags[-1][1]:.1f}", f"{slope:+.2f}", "—"]
        )
    return rows


def main() -> None:
    from cli.launcher import up
    from training.registry import Registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="texts per second")
    parser.add_argument("--every-s", type=float, default=30.0)
    parser.add_argument(
        "--rounds",
        action="store_true",
        help="run the scheduler as `distillery up` does (drift every minute, rounds when its "
        "triggers fire); without it the stack runs none (bench_settings); writes soak-rounds",
    )
    parser.add_argument(
        "--join-window-s", type=float, default=None,
        help="DISTILLERY_STORE_JOIN_WINDOW_S (default 3600): how long a replica keeps an "
        "unsampled request for a late rating; its cache grows for that long, then holds",
    )  # fmt: skip
    parser.add_argument("--name", default=None, help="results name (default soak, soak-rounds)")
    args = parser.parse_args()
    settings = bench_settings("soak")
    if args.join_window_s is not None:
        store = settings.store.model_copy(update={"join_window_s": args.join_window_s})
        settings = settings.model_copy(update={"store": store})
    if args.rounds:
        from distillery.settings import SchedulerSettings

        settings = settings.model_copy(update={"scheduler": SchedulerSettings()})
    loop = up(settings)
    load = Steady(loop.api_url, args.rate, texts(5_000, settings.paths.data_dir))
    stop = threading.Event()
    sender = threading.Thread(target=load.run, args=(stop,), daemon=True)
    sender.start()
    samples: list[dict[str, Any]] = []
    start = last = time.time()
    try:
        while time.time() - start < args.minutes * 60:
            time.sleep(args.every_s)
            lag = lag_s(settings.paths.store_dir, last)
            last = time.time()
            samples.append({"ts": last - start, "memory_mb": memory_by_process(), "lag_s": lag})
            print(f"{(last - start) / 60:.1f} min: {sum(samples[-1]['memory_mb'].values()):.0f} "
                  f"MB, lag {lag}", flush=True)  # fmt: skip
    finally:
        stop.set()
        sender.join(timeout=60)
        loop.stop()
    window = settings.store.join_window_s
    header = ["process", "MB first", "MB last", "MB / hour",
              f"MB / hour after {window / 60:g} min (the join cache full)"]  # fmt: skip
    md = markdown_table(header, summarise(samples, window + 60))
    md += f"\n{args.minutes:g} min at {args.rate:g} texts/s: {load.sent} sent, "
    md += f"{load.failed} failed.\n"
    print(md)
    versions = len(Registry(settings.paths.registry_dir).versions())
    md += f"{versions} versions registered (v1 included).\n"
    payload = {"args": vars(args), "sent": load.sent, "failed": load.failed, "samples": samples,
               "versions": versions}  # fmt: skip
    write_results(args.name or ("soak-rounds" if args.rounds else "soak"), payload, md)


if __name__ == "__main__":
    main()
