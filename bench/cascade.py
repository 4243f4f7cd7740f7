"""The drift benchmark with the cascade on: ``python -m bench.cascade``.

The live loop of ``bench.drift_recovery`` (movies → tweets → amazon → nyt, the scheduler
retraining on its own), except that every traffic request asks for ``min_confidence``: 0.7 by
default, or (``--min-confidence offered``) the threshold ``distillery status`` offers for the
serving student (``training.selective``), re-read every ``eval_every_s`` (1.0 while none is
offered); what status offered is recorded either way. Per window of ``window_s`` seconds:

- the share of texts the teacher answered (``answered_by == "teacher"``);
- the accuracy of what users received, against the human labels;
- the teacher alone on the same texts (offline, the same zero-shot teacher);

and every ``eval_every_s`` the student alone on the phase's held-out texts (served,
``allow_training=false``, no cascade). The goal: the teacher's share falls after each shift while
delivered accuracy stays within 1 point of the teacher. Writes ``bench/results/cascade.{json,md,
png}``.

    python -m bench.cascade [--per-phase 1600] [--rate 16] [--min-confidence 0.7|offered]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np

from bench import drift_recovery as drift
from bench.harness import RESULTS, ROOT, markdown_table, write_results
from cli.demo import rate_as_user
from distillery import vader
from distillery.settings import CascadeSettings

WITHIN = 0.01  # delivered accuracy at most 1 point below the teacher's


@dataclass
class Answer:
    t_s: float
    phase: str
    by_teacher: bool
    deferral: str | None
    correct: bool  # what the user received matches the human label
    teacher_correct: bool  # the teacher alone, offline, on the same text
    threshold: float


@dataclass
class CascadeRun:
    settings: dict[str, Any]
    answers: list[Answer] = field(default_factory=list)
    student: list[drift.Point] = field(default_factory=list)  # the student alone, held out
    phases: list[str] = field(default_factory=list)
    offered: list[dict[str, Any]] = field(default_factory=list)  # status's threshold over time
    wall_s: float = 0.0


class Threshold:
    """The ``min_confidence`` traffic asks for: fixed, or the one status offers now (1.0 while
    none is offered); ``offered`` keeps what status offered at each refresh, either way."""

    def __init__(self, fixed: float | None) -> None:
        self.fixed, self.value = fixed, 1.0 if fixed is None else fixed
        self.offered: list[dict[str, Any]] = []

    def refresh(self, client: httpx.Client, t_s: float = 0.0) -> float:
        cascade = client.get("/v1/status").json().get("cascade") or {}
        offered = cascade.get("offered") or {}
        self.offered.append({"t_s": t_s, "version": cascade.get("version"), **offered})
        if self.fixed is None:
            self.value = 1.0 if offered.get("threshold") is None else offered["threshold"]
        return self.value


def send(
    client: httpx.Client,
    rows: list[vader.VaderRow],
    teacher_right: dict[str, bool],
    ctx: dict[str, Any],
) -> None:
    """``rows`` as traffic at ``ctx["rate"]`` texts/s in chunks of 8, each asking for the
    current threshold; 5% of answers rated by a user who knows the label."""
    rng, run, phase, at = random.Random(3), ctx["run"], ctx["phase"], ctx["threshold"]
    period = drift.CHUNK / ctx["rate"]
    for i in range(0, len(rows), drift.CHUNK):
        if ctx["stop"].is_set():
            return
        started, chunk = time.monotonic(), rows[i : i + drift.CHUNK]
        body = {"text": [r.text for r in chunk], "min_confidence": at.value}
        with contextlib.suppress(httpx.HTTPError):
            answers = client.post("/v1/predict", json=body).raise_for_status().json()
            t = round(time.monotonic() - ctx["t0"], 1)
            for answer, row in zip(answers["predictions"], chunk, strict=True):
                run.answers.append(
                    Answer(t, phase, answer["answered_by"] == "teacher", answer["deferral"],
                           answer["label"] == row.label, teacher_right[row.text], at.value)
                )  # fmt: skip
                if rng.random() < 0.05:
                    rate_as_user(client, answer, row)
        ctx["stop"].wait(max(0.0, period - (time.monotonic() - started)))


def teacher_right(settings: Any, rows: list[vader.VaderRow]) -> dict[str, bool]:
    """Per text: the zero-shot teacher's label is the human one (offline, same teacher)."""
    from distillery.task import load_task
    from models.factory import build_teacher

    task = load_task(settings.paths.task_file)
    teacher = build_teacher(settings.teacher, task, settings.paths.state_dir)
    out: dict[str, bool] = {}
    for i in range(0, len(rows), 64):
        chunk = rows[i : i + 64]
        probs = teacher.label([r.text for r in chunk]).probs  # (B, C)
        for row, k in zip(chunk, np.asarray(probs).argmax(1), strict=True):
            out[row.text] = task.label_names[int(k)] == row.label
    return out


def run_phase(client: httpx.Client, settings: Any, rows: Any, ctx: dict[str, Any]) -> None:
    held, traffic = rows
    ctx["stop"] = threading.Event()
    sender = threading.Thread(target=send, args=(client, traffic, ctx["teacher_right"], ctx))
    sender.start()
    phase_ctx = {"t0": ctx["t0"], "phase_wall": time.time()}
    try:
        while sender.is_alive():
            ctx["stop"].wait(ctx["eval_every_s"])
            ctx["threshold"].refresh(client, round(time.monotonic() - ctx["t0"], 1))
            point = drift.evaluate(client, settings, held, ctx["phase"], phase_ctx)
            ctx["run"].student.append(point)
    finally:
        ctx["stop"].set()
        sender.join()


def measure(args: argparse.Namespace) -> CascadeRun:
    from cli.launcher import up

    state = ROOT / "state" / "bench-cascade"
    shutil.rmtree(state, ignore_errors=True)  # every run starts from the seed student, v1
    settings = drift.bench_loop_settings(state, "minilm").model_copy(
        update={"cascade": CascadeSettings(timeout_ms=args.teacher_timeout_ms)}
    )
    vader.fetch(settings.paths.data_dir)
    domains = args.domains.split(",")
    seeds = drift.seed_texts(settings)
    splits = {
        d: drift.split(d, settings.paths.data_dir, args.eval_size, args.per_phase, seeds)
        for d in domains
    }
    right = teacher_right(settings, [r for _, traffic in splits.values() for r in traffic])
    run = CascadeRun({k: v for k, v in vars(args).items()}, phases=domains)
    fixed = None if args.min_confidence == "offered" else float(args.min_confidence)
    started = time.monotonic()
    running = up(settings)
    try:
        with httpx.Client(base_url=running.api_url, timeout=120) as client:
            ctx = {"run": run, "t0": time.monotonic(), "rate": args.rate, "teacher_right": right,
                   "threshold": Threshold(fixed), "eval_every_s": args.eval_every_s}  # fmt: skip
            ctx["threshold"].refresh(client)
            for domain in domains:
                ctx["phase"] = domain
                print(f"{domain}: min_confidence {ctx['threshold'].value:.3f}")
                run_phase(client, running.settings, splits[domain], ctx)
            run.offered = ctx["threshold"].offered
    finally:
        running.stop()
    run.wall_s = round(time.monotonic() - started, 1)
    return run


def windows(run: CascadeRun, window_s: float) -> list[dict[str, Any]]:
    """Per phase and ``window_s`` of traffic: texts, the teacher's share of answers, delivered
    and teacher-alone accuracy on those texts, and the mean threshold asked for."""
    out = []
    for phase in run.phases:
        mine = [a for a in run.answers if a.phase == phase]
        if not mine:
            continue
        start = mine[0].t_s
        for k in range(int((mine[-1].t_s - start) // window_s) + 1):
            part = [a for a in mine if start + k * window_s <= a.t_s < start + (k + 1) * window_s]
            if part:
                out.append({
                    "phase": phase, "t_s": round(start + (k + 0.5) * window_s, 1),
                    "texts": len(part),
                    "teacher_share": float(np.mean([a.by_teacher for a in part])),
                    "delivered": float(np.mean([a.correct for a in part])),
                    "teacher": float(np.mean([a.teacher_correct for a in part])),
                    "threshold": float(np.mean([a.threshold for a in part])),
                })  # fmt: skip
    return out


def phase_summary(run: CascadeRun) -> list[dict[str, Any]]:
    """Per phase: the teacher's share in its first and last third, delivered vs teacher-alone
    accuracy on the phase's traffic, the student alone (held out) at its start and end, and
    why the student answered texts below the threshold."""
    rows = []
    for phase in run.phases:
        mine = [a for a in run.answers if a.phase == phase]
        if not mine:
            continue
        third = max(1, len(mine) // 3)
        alone = [p.accuracy for p in run.student if p.phase == phase]
        reasons = {r: sum(a.deferral == r for a in mine) for r in
                   ("teacher_budget", "latency_budget", "teacher_unavailable")}  # fmt: skip
        rows.append({
            "phase": phase, "texts": len(mine),
            "share_first": float(np.mean([a.by_teacher for a in mine[:third]])),
            "share_last": float(np.mean([a.by_teacher for a in mine[-third:]])),
            "share": float(np.mean([a.by_teacher for a in mine])),
            "delivered": float(np.mean([a.correct for a in mine])),
            "teacher": float(np.mean([a.teacher_correct for a in mine])),
            "student_start": alone[0] if alone else None,
            "student_end": alone[-1] if alone else None,
            "not_deferred": reasons,
        })  # fmt: skip
    return rows


def goals(summary: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    return {
        "the teacher's share falls within each phase (last third < first third)": {
            s["phase"]: s["share_last"] < s["share_first"] for s in summary
        },
        f"delivered accuracy within {WITHIN * 100:.0f} pt of the teacher alone": {
            s["phase"]: s["delivered"] >= s["teacher"] - WITHIN for s in summary
        },
    }


def table(run: CascadeRun, summary: list[dict[str, Any]]) -> str:
    def pct(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    rows = [
        [s["phase"], s["texts"], f"{s['share_first']:.0%} → {s['share_last']:.0%}",
         f"{s['share']:.0%}", pct(s["delivered"]), pct(s["teacher"]),
         f"{pct(s['student_start'])} → {pct(s['student_end'])}",
         ", ".join(f"{k} {v}" for k, v in s["not_deferred"].items() if v) or "none"]
        for s in summary
    ]  # fmt: skip
    header = ["phase", "texts", "teacher share (first → last third)", "teacher share",
              "delivered accuracy", "teacher alone", "student alone (held out)",
              "below threshold, student answered"]  # fmt: skip
    lines = [markdown_table(header, rows), "Goals:"]
    for goal, verdicts in goals(summary).items():
        marks = ", ".join(f"{d} {'yes' if ok else 'no'}" for d, ok in verdicts.items())
        lines.append(f"- {goal}: {marks}")
    asked = run.settings["min_confidence"]
    last = next((o for o in reversed(run.offered) if o.get("threshold") is not None), None)
    offered = (
        "none met its target"
        if last is None
        else (
            f"last offered {last['threshold']:.3f} for v{last['version']} (coverage "
            f"{last['coverage']:.0%}, bound {last['lower_bound']:.3f} ≥ {last['target']:.3f})"
        )
    )
    budget = run.settings.get("teacher_timeout_ms")
    lines.append(
        f"\nmin_confidence asked: {asked}, latency budget {budget} ms; the threshold status "
        f"offered: {offered}; wall time {run.wall_s / 60:.1f} min."
    )
    return "\n".join(lines) + "\n"


def plot(run: CascadeRun, points: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (share, acc) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    t = [p["t_s"] for p in points]
    share.plot(t, [p["teacher_share"] for p in points], "o-", ms=3, color="tab:orange")
    share.set_ylabel("share answered\nby the teacher")
    share.set_ylim(0, 1)
    acc.plot(t, [p["delivered"] for p in points], "o-", ms=3, label="delivered (cascade)")
    acc.plot(t, [p["teacher"] for p in points], "-", color="tab:green", label="teacher alone")
    alone = run.student
    acc.plot([p.t_s for p in alone], [p.accuracy for p in alone], "x--", ms=4, color="tab:red",
             label="student alone (held out)")  # fmt: skip
    acc.set_ylabel("accuracy (human labels)")
    acc.set_xlabel("seconds of live traffic")
    acc.set_ylim(0.5, 1.0)
    acc.legend(loc="lower right", fontsize=9)
    starts: dict[str, float] = {}
    for p in points:
        starts.setdefault(p["phase"], p["t_s"])
    for phase, left in starts.items():
        for ax in (share, acc):
            ax.axvline(left, color="grey", lw=0.5)
        share.text(left + 2, 0.9, phase, fontsize=9, color="grey")
    share.set_title("the cascade on drifting traffic: who answered, and how well")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-phase", type=int, default=1600, help="traffic texts per phase")
    parser.add_argument("--eval-size", type=int, default=300, help="held-out texts per phase")
    parser.add_argument("--rate", type=float, default=16.0, help="traffic, texts per second")
    parser.add_argument("--eval-every-s", type=float, default=20.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--min-confidence", default="0.7", help="a number, or offered")
    parser.add_argument(
        "--teacher-timeout-ms", type=float, default=1000, help="the cascade's latency budget"
    )
    parser.add_argument("--domains", default=",".join(vader.DOMAINS))
    args = parser.parse_args()
    run = measure(args)
    points, summary = windows(run, args.window_s), phase_summary(run)
    payload = {"run": asdict(run) | {"answers": len(run.answers)}, "windows": points,
               "phases": summary, "goals": goals(summary)}  # fmt: skip
    json_path, _ = write_results("cascade", payload, table(run, summary))
    plot(run, points, RESULTS / "cascade.png")
    print(table(run, summary))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
