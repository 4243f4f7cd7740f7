"""Where the labeler's memory goes: its resident size under steady sampled traffic, with oneDNN's
primitive cache at its default and switched off, side by side in one run.

The hour-long soak saw the labeler grow 181 MB, most of it in the first 15 minutes, while none of
its own structures grows (its recent ids are bounded). A run under ``tracemalloc`` showed the
Python heap flat (105.8 → 119.3 MiB over 4 minutes) while the resident size grew 700 MB, so the
growth is native. oneDNN, which runs the teacher's matrix products, keeps a compiled primitive
per input shape (up to ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1,024 by default), and a batch's
shape changes with its size and its longest text. This starts two labelers, each in its own
process with its own embedded broker, one per setting, and feeds both the same steady stream.

    .venv/bin/python -m bench.labeler_memory --minutes 4 --rate 15  # ~5 min; JSON and a table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.harness import ROOT, markdown_table, texts, write_results
from bench.soak import rss_mb

SETTINGS = {"default (1,024)": None, "off (0)": "0"}


def feed(minutes: float, rate: float, state: Path) -> list[dict[str, float]]:
    """One labeler on its own embedded broker, fed ``rate`` sampled texts/s; RSS every minute."""
    from distillery import bus
    from distillery.events import SampledPrediction, Topics
    from distillery.settings import PathSettings, Settings
    from distillery.task import load_task
    from services.broker import EmbeddedBroker
    from services.labeler import Labeler

    task_file = ROOT / "tasks" / "sentiment.yaml"
    with EmbeddedBroker() as broker:
        kafka = broker.kafka()
        bus.ensure_topics(kafka)
        settings = Settings(kafka=kafka, paths=PathSettings(state_dir=state, task_file=task_file))
        bodies = texts(5_000, settings.paths.data_dir)
        labeler = Labeler(settings, load_task(task_file))
        threading.Thread(target=labeler.run, daemon=True).start()
        producer = bus.make_producer(kafka)
        samples: list[dict[str, float]] = []

        def sample(minute: float) -> None:
            rss = rss_mb(Path("/proc/self/status").read_text())
            samples.append(
                {"minute": minute, "rss_mb": rss, "labelled": labeler.counts["labelled"]}
            )

        start, sent = time.monotonic(), 0
        while (elapsed := time.monotonic() - start) < minutes * 60:
            if elapsed >= 60 * len(samples):
                sample(elapsed / 60)
            event = SampledPrediction(
                request_id=str(uuid.uuid4()), text=bodies[sent % len(bodies)],
                student_probs=[0.4, 0.6], model_version=1,
            )  # fmt: skip
            bus.send(producer, Topics.SAMPLED, event, event.request_id)
            sent += 1
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        sample(minutes)
        labeler.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=15.0, help="sampled texts per second")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a JSON file to write one run to
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as state:
            Path(args.child).write_text(json.dumps(feed(args.minutes, args.rate, Path(state))))
        return
    runs, out = {}, Path(tempfile.mkdtemp())
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, capacity in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        if capacity is not None:
            env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
        path = out / f"{len(procs)}.json"
        command = [sys.executable, "-m", "bench.labeler_memory", "--child", str(path),
                   "--minutes", str(args.minutes), "--rate", str(args.rate)]  # fmt: skip
        procs[name] = (subprocess.Popen(command, env=env, cwd=ROOT), path)
    for name, (proc, path) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {name} run failed with exit code {proc.returncode}")
        runs[name] = json.loads(path.read_text())
    rows = []
    for name, samples in runs.items():
        first, last = samples[1], samples[-1]  # from minute 1: the model and the broker are up
        per_min = (last["rss_mb"] - first["rss_mb"]) / max(last["minute"] - first["minute"], 1e-9)
        rows.append([name, round(samples[0]["rss_mb"]), round(first["rss_mb"]),
                     round(last["rss_mb"]), f"{per_min:+.1f}", int(last["labelled"])])  # fmt: skip
    header = ["oneDNN primitive cache", "MB at start", "MB at 1 min", "MB at end",
              "MB / min after 1 min", "labelled"]  # fmt: skip
    table = markdown_table(header, rows)
    table += (
        f"\nTwo labelers side by side, {args.minutes:g} min at {args.rate:g} sampled texts/s each "
        "(the embedding teacher, one torch thread).\n"
    )
    for path in write_results("labeler_memory", {"args": vars(args), "runs": runs}, table):
        print(path)
    print(table)


if __name__ == "__main__":
    main()
