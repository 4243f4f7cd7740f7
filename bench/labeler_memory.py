"""Where the labeler's memory goes: its resident size under steady sampled traffic, with oneDNN's
primitive cache at its default and switched off, side by side in one run.

The hour-long soak saw the labeler grow 181 MB, most of it in the first 15 minutes, while none of
its own structures grows (its recent ids are bounded). A run under ``tracemalloc`` showed the
Python heap flat (105.8 → 119.3 MiB over 4 minutes) while the resident size grew 700 MB, so the
growth is native. oneDNN, which runs the teacher's matrix products, keeps a compiled primitive
per input shape (up to ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1,024 by default), and a batch's
shape changes with its size and its longest text. This starts one labeler per setting (the
default, a smaller cache, none), each in its own process with its own embedded broker, and feeds
all the same steady stream; then it times the teacher under each setting, one process at a time,
since a smaller cache is paid for in kernels compiled again.

    .venv/bin/python -m bench.labeler_memory --minutes 4 --rate 15  # ~7 min; JSON and a table
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

SETTINGS = {"default (1,024)": None, "256": "256", "off (0)": "0"}
SPEED_TEXTS, SPEED_ROUNDS = 1_500, 2


def speed(n: int) -> float:
    """The embedding teacher's texts/s on ``n`` VADER texts in batches of 1–32 texts (seeded), as
    the labeler's batches vary with what arrives; one torch thread, as the labeler runs it."""
    import random

    import torch

    from distillery.settings import Settings
    from distillery.task import load_task
    from models.factory import embedding_teacher

    torch.set_num_threads(1)
    settings = Settings()
    teacher = embedding_teacher(settings.teacher, load_task(ROOT / "tasks" / "sentiment.yaml"))
    bodies, sizes = texts(n + 200, settings.paths.data_dir), random.Random(1)
    teacher.label(bodies[:200])  # the model loaded and warm
    start, done = time.perf_counter(), 200
    while done < n + 200:
        size = sizes.randint(1, 32)
        teacher.label(bodies[done : done + size])
        done += size
    return n / (time.perf_counter() - start)


def _env(capacity: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if capacity is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
    return env


def speeds(out: Path) -> dict[str, list[float]]:
    """Each setting's teacher speed in a process of its own, one at a time, the settings taken
    in turn ``SPEED_ROUNDS`` times so that a noisy minute falls on every setting alike."""
    got: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for turn in range(SPEED_ROUNDS):
        for i, (name, capacity) in enumerate(SETTINGS.items()):
            path = out / f"speed-{turn}-{i}.json"
            command = [sys.executable, "-m", "bench.labeler_memory", "--speed", str(path)]
            subprocess.run(command, env=_env(capacity), cwd=ROOT, check=True)
            got[name].append(json.loads(path.read_text()))
    return got


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


def results_table(
    runs: dict[str, list[dict[str, float]]],
    rates: dict[str, list[float]],
    args: argparse.Namespace,
) -> str:
    """One row per setting: resident size over the run, and the teacher's speed against the
    default's (best of the turns: the fastest turn is the least disturbed one)."""
    base = max(rates[next(iter(SETTINGS))])
    rows = []
    for name, samples in runs.items():
        first, last = samples[1], samples[-1]  # from minute 1: the model and the broker are up
        per_min = (last["rss_mb"] - first["rss_mb"]) / max(last["minute"] - first["minute"], 1e-9)
        best = max(rates[name])
        rows.append([name, round(samples[0]["rss_mb"]), round(first["rss_mb"]),
                     round(last["rss_mb"]), f"{per_min:+.1f}", int(last["labelled"]),
                     f"{best:.1f}", f"{best / base:.3f}"])  # fmt: skip
    header = ["oneDNN primitive cache", "MB at start", "MB at 1 min", "MB at end",
              "MB / min after 1 min", "labelled", "teacher texts/s",
              "of the default's"]  # fmt: skip
    return markdown_table(header, rows) + (
        f"\n{len(runs)} labelers side by side, {args.minutes:g} min at {args.rate:g} sampled "
        "texts/s each (the embedding teacher, one torch thread). Teacher speed: "
        f"{SPEED_TEXTS:,} texts in batches of 1–32, each setting in a process of its own, one "
        f"at a time, best of {SPEED_ROUNDS} turns.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=15.0, help="sampled texts per second")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a JSON file to write one run to
    parser.add_argument("--speed", help=argparse.SUPPRESS)  # a JSON file to write a speed to
    args = parser.parse_args()
    if args.speed:
        Path(args.speed).write_text(json.dumps(speed(SPEED_TEXTS)))
        return
    if args.child:
        with tempfile.TemporaryDirectory() as state:
            Path(args.child).write_text(json.dumps(feed(args.minutes, args.rate, Path(state))))
        return
    runs, out = {}, Path(tempfile.mkdtemp())
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, capacity in SETTINGS.items():
        path = out / f"{len(procs)}.json"
        command = [sys.executable, "-m", "bench.labeler_memory", "--child", str(path),
                   "--minutes", str(args.minutes), "--rate", str(args.rate)]  # fmt: skip
        procs[name] = (subprocess.Popen(command, env=_env(capacity), cwd=ROOT), path)
    for name, (proc, path) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {name} run failed with exit code {proc.returncode}")
        runs[name] = json.loads(path.read_text())
    rates = speeds(out)
    table = results_table(runs, rates, args)
    result = {"args": vars(args), "runs": runs, "speeds": rates}
    for path in write_results("labeler_memory", result, table):
        print(path)
    print(table)


if __name__ == "__main__":
    main()
