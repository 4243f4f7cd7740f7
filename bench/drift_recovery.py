"""The drift-recovery benchmark: VADER's four domains as timed phases of live traffic.

movies → tweets → amazon → nyt go through the running loop's HTTP API (``distillery up`` in this
process, on its own state); the scheduler retrains on its own, every candidate passes the gate and
a shadow → canary rollout. Every ``eval_every_s`` the served student answers each phase's held-out
texts (``allow_training=false``, so they never reach the teacher); against their human labels:

- the teacher (zero-shot, fixed) and the never-retrained student (v1, from the movie seed),
  computed offline once per domain;
- the online student, over time, with the teacher labels used so far in the phase.

Reported per phase: accuracies, the labels and seconds until the online student is within 2 points
of the teacher, and the end-of-run accuracy on every domain (forgetting). Writes
``bench/results/drift_recovery.{json,md,png}``.

    python -m bench.drift_recovery [--per-phase 2400] [--rate 16] [--teacher minilm|mpnet]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness import RESULTS, ROOT
from cli.demo import read_status
from distillery import vader
from distillery.settings import (
    GateSettings,
    PathSettings,
    RolloutSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
    TeacherSettings,
)

WITHIN = 0.02  # "caught up": at most 2 points below the teacher
CHUNK = 8


@dataclass
class Point:
    """One evaluation of the served student on a phase's held-out texts."""

    t_s: float  # seconds since the run began
    phase: str
    labels: int  # teacher labels stored since the phase began
    accuracy: float
    version: int


@dataclass
class PhaseResult:
    domain: str
    teacher: float
    frozen: float  # the never-retrained student (v1)
    start: float  # online student at the phase's start
    end: float  # ... at its end
    final: float = 0.0  # ... at the end of the whole run (forgetting)
    labels: int = 0  # teacher labels stored during the phase
    texts: int = 0
    seconds: float = 0.0
    caught_up_labels: int | None = None  # labels until within 2 points of the teacher
    caught_up_s: float | None = None
    versions: list[int] = field(default_factory=list)


@dataclass
class Run:
    teacher: str
    settings: dict[str, Any]
    phases: list[PhaseResult] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    wall_s: float = 0.0
    t0: float = 0.0  # time.monotonic() when traffic began; points count from here


def bench_loop_settings(state: Path, teacher: Any) -> Settings:
    from services.broker import free_port

    return Settings(
        paths=PathSettings(state_dir=state),
        serve=ServeSettings(
            port=free_port(), metrics_export_port=free_port(), sample_rate=0.5, max_items=64
        ),
        teacher=(
            TeacherSettings(kind="llm", budget_per_min=60)
            if teacher == "llm"
            else TeacherSettings(model=teacher)
        ),
        scheduler=SchedulerSettings(  # every trigger live; a phase lasts about 4 minutes
            min_new_labels=400, poll_s=2, drift_every_s=20, cooldown_minutes=0.5
        ),
        gate=GateSettings(min_holdout=20),
        rollout=RolloutSettings(
            shadow_s=10, canary_s=15, max_stage_s=45, canary_share=0.5, min_feedback=5
        ),
    )


Rows = list[vader.VaderRow]


def split(
    domain: str, data_dir: Path, eval_size: int, per_phase: int, seed_texts: set[str]
) -> tuple[Rows, Rows]:
    """(held-out eval rows, traffic rows) of a domain, never overlapping, no seed texts."""
    rows = [r for r in vader.load(domain, data_dir) if r.text not in seed_texts]
    random.Random(7).shuffle(rows)
    return rows[:eval_size], rows[eval_size : eval_size + per_phase]


def seed_texts(settings: Settings) -> set[str]:
    """The movie sentences version 1 was distilled from (``cycle.seed_rows``' choice)."""
    from distillery.task import load_task
    from training import cycle

    task = load_task(settings.paths.task_file)
    if task.seed_file is None:
        return set()
    return set(cycle.seed_texts(settings, task))


def offline_accuracy(settings: Settings, model_dir: Path, rows: list[vader.VaderRow]) -> float:
    from models.student import Student

    return student_accuracy(Student.load(model_dir, settings.serve.max_tokens), rows)


def student_accuracy(student: Any, rows: list[vader.VaderRow]) -> float:
    """Share of ``rows`` whose human label ``student`` (a ``models.student.Student``) gives."""
    probs = student.predict_proba([r.text for r in rows])
    names = student.labels
    return float(np.mean([names[i] == r.label for i, r in zip(probs.argmax(1), rows, strict=True)]))


def teacher_accuracy(settings: Settings, rows: list[vader.VaderRow]) -> float:
    from cli.demo import teacher_accuracy as zero_shot

    return zero_shot(rows, settings)


def served_accuracy(client: httpx.Client, rows: list[vader.VaderRow]) -> tuple[float, int]:
    from cli.demo import accuracy

    return accuracy(client, rows)


def labels_since(settings: Settings, since: float) -> int:
    from feedback.examples import count_labels_since

    return count_labels_since(settings.paths.store_dir, since)


def send_traffic(
    client: httpx.Client, rows: list[vader.VaderRow], rate: float, stop: threading.Event
) -> None:
    """``rows`` as live traffic at ``rate`` texts/s (chunks of 8), rating 5% of answers as a
    user who knows the label would (1 and the right label when wrong)."""
    from cli.demo import _one_chunk

    rng = random.Random(3)
    period = CHUNK / rate
    for i in range(0, len(rows), CHUNK):
        if stop.is_set():
            return
        started = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            _one_chunk(client, rows[i : i + CHUNK], 0.05, rng)
        stop.wait(max(0.0, period - (time.monotonic() - started)))


def quiet(client: httpx.Client) -> bool:
    """No round running and no rollout in progress."""
    status = read_status(client)
    return not status.round_running and status.rollout is None


def evaluate(
    client: httpx.Client, settings: Settings, held: list[vader.VaderRow], phase: str, ctx: dict
) -> Point:
    accuracy, version = served_accuracy(client, held)
    labels = labels_since(settings, ctx["phase_wall"])
    point = Point(round(time.monotonic() - ctx["t0"], 1), phase, labels, accuracy, version)
    print(f"  {point.t_s:6.0f}s {phase}: v{version} {accuracy:.3f} after {labels} labels")
    return point


def run_phase(
    client: httpx.Client,
    settings: Settings,
    result: PhaseResult,
    rows: tuple[list[vader.VaderRow], list[vader.VaderRow]],
    args: argparse.Namespace,
    run: Run,
) -> None:
    """Traffic at ``args.rate`` until the phase's texts are spent, then until the rounds it
    triggered have ended (at most ``args.settle_s``); the student is evaluated throughout."""
    held, traffic = rows
    ctx = {"t0": run.t0, "phase_wall": time.time()}
    start = time.monotonic()
    stop = threading.Event()
    sender = threading.Thread(target=send_traffic, args=(client, traffic, args.rate, stop))
    sender.start()
    settle_until = None
    try:
        while True:
            time.sleep(args.eval_every_s)
            point = evaluate(client, settings, held, result.domain, ctx)
            run.points.append(point)
            result.versions.append(point.version)
            if result.caught_up_labels is None and point.accuracy >= result.teacher - WITHIN:
                result.caught_up_labels = point.labels
                result.caught_up_s = round(time.monotonic() - start, 1)
            if sender.is_alive():
                continue
            settle_until = settle_until or time.monotonic() + args.settle_s
            status = read_status(client)
            pending = status.labels_since_last_round >= settings.scheduler.min_new_labels
            if (quiet(client) and not pending) or time.monotonic() > settle_until:
                break
    finally:
        stop.set()
        sender.join()
    result.end = run.points[-1].accuracy
    result.labels = run.points[-1].labels
    result.texts = len(traffic)
    result.seconds = round(time.monotonic() - start, 1)


def dashboard_shot(api_url: str, out: Path) -> None:
    """The operator page as the run ends (the README's picture), when Chromium is here."""
    try:
        from tests.browser import screenshot

        screenshot(f"{api_url}/dashboard", out)
        print(f"dashboard: {out}")
    except Exception as exc:  # no browser must not lose the benchmark's figures
        print(f"no dashboard screenshot: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", choices=["minilm", "mpnet", "llm"], default="minilm")
    parser.add_argument("--per-phase", type=int, default=2400, help="traffic texts per phase")
    parser.add_argument("--eval-size", type=int, default=400, help="held-out texts per phase")
    parser.add_argument("--rate", type=float, default=16.0, help="traffic, texts per second")
    parser.add_argument("--eval-every-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=240.0, help="after a phase's traffic")
    parser.add_argument("--domains", default=",".join(vader.DOMAINS))
    args = parser.parse_args()
    run = measure(args)
    from bench.drift_report import write

    write(run, RESULTS / f"drift_recovery{'' if args.teacher == 'minilm' else '_' + args.teacher}")


def measure(args: argparse.Namespace) -> Run:
    from cli.launcher import up

    state = ROOT / "state" / f"bench-drift-{args.teacher}"
    shutil.rmtree(state, ignore_errors=True)  # every run starts from the seed student, v1
    settings = bench_loop_settings(state, args.teacher)
    vader.fetch(settings.paths.data_dir)
    domains = args.domains.split(",")
    seeds = seed_texts(settings)
    data_dir = settings.paths.data_dir
    splits = {d: split(d, data_dir, args.eval_size, args.per_phase, seeds) for d in domains}
    run = Run(args.teacher, {k: v for k, v in vars(args).items()})
    started = time.monotonic()
    running = up(settings)
    try:
        settings = running.settings
        from training.registry import Registry

        paths = settings.paths
        v1 = Registry(paths.model_store_url()).local_dir(1, paths.model_cache_path())
        results = {
            d: PhaseResult(
                d, teacher_accuracy(settings, held), offline_accuracy(settings, v1, held), 0.0, 0.0
            )
            for d, (held, _) in splits.items()
        }
        with httpx.Client(base_url=running.api_url, timeout=120) as client:
            run.t0 = time.monotonic()
            for domain in domains:
                result = results[domain]
                result.start, version = served_accuracy(client, splits[domain][0])
                if result.start >= result.teacher - WITHIN:  # caught up before any label
                    result.caught_up_labels, result.caught_up_s = 0, 0.0
                t = round(time.monotonic() - run.t0, 1)
                run.points.append(Point(t, domain, 0, result.start, version))
                print(
                    f"{domain}: teacher {result.teacher:.3f}, frozen v1 {result.frozen:.3f}, "
                    f"online v{version} {result.start:.3f}"
                )
                run_phase(client, settings, result, splits[domain], args, run)
                run.phases.append(result)
            for result in run.phases:
                result.final, _ = served_accuracy(client, splits[result.domain][0])
        dashboard_shot(running.api_url, RESULTS / f"dashboard_{args.teacher}.png")
    finally:
        running.stop()
    run.wall_s = round(time.monotonic() - started, 1)
    return run


if __name__ == "__main__":
    main()
