"""Learning from people, when the teacher is wrong and when a key lies: ``python -m bench.people``.

VADER sentiment; a text's human label is the sign of VADER's mean human rating. The teacher is
MiniLM zero-shot (``embedding``), with the task's prompts (``normal``) or with its two label
prompts swapped (``swapped``: mostly wrong). Each arm starts from its own v1, distilled from its
teacher on 600 seed texts, then serves ``steps`` × ``per_step`` requests of a fixed stream. The
teacher labels ``teacher_share`` of them, plus every rated one (as the loop's recall does). After
each step one round runs exactly as the loop's does: ``feedback.human_labels.apply`` →
``training.data.build_round`` → ``training.round.fit`` from the serving student →
``training.gate.measure``/``decide``; a candidate that passes serves the next step.

Scenarios and arms:

- ``swapped`` and ``normal``: users who know the label rate ``rate_share`` of the answers
  (open mode: the anonymous key, trusted). ``before``: trust off, no confirmations, the teacher
  as referee (the loop before issue 16); ``after``: the defaults.
- ``adversary`` (normal teacher): three honest keys rate 10% of traffic truthfully; one key rates
  30% of the same traffic with the label flipped; no key is marked trusted. ``trust on``,
  ``trust off``, and ``no adversary`` (trust on, the adversary's feedback dropped).

Measured per round: the student's accuracy on 400 held-out human-labelled texts (and the
teacher's), ratings so far, the gate's outcome, referee and failed checks, and each key's
weight. Writes ``bench/results/people.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.harness import ROOT, write_results
from bench.people_report import plot, render
from distillery import vader
from distillery.events import Topics
from distillery.settings import GateSettings, PathSettings, Settings, TrustSettings
from distillery.task import Task, load_task
from feedback import human_labels
from models.student import Student
from training import gate
from training.data import build_round
from training.round import fit

STATE = ROOT / "state" / "bench-people"
HONEST = ("honest-1", "honest-2", "honest-3")
ADVERSARY = "adversary"


@dataclass(frozen=True)
class Arm:
    scenario: str  # swapped | normal | adversary
    name: str
    trust: TrustSettings
    referee: str = "auto"
    adversary: bool = False
    raters: str = "users"  # users: the open key; keys: honest keys (+ the adversary)


def arms() -> list[Arm]:
    before = TrustSettings(mode="off", confirmations=False)
    on, off = TrustSettings(), TrustSettings(mode="off")
    return [
        Arm("swapped", "before", before, referee="teacher"),
        Arm("swapped", "after", on),
        Arm("normal", "before", before, referee="teacher"),
        Arm("normal", "after", on),
        Arm("adversary", "no adversary", on, raters="keys"),
        Arm("adversary", "trust on", on, adversary=True, raters="keys"),
        Arm("adversary", "trust off", off, adversary=True, raters="keys"),
    ]


@dataclass
class World:
    task: Task
    stream: list[vader.VaderRow]
    eval_rows: list[vader.VaderRow]
    seed_texts: list[str]
    logits: dict[str, dict[str, np.ndarray]]  # teacher (normal | swapped) → text → (C,)
    args: argparse.Namespace
    seed: int
    settings: Settings = field(default_factory=Settings)


def swapped(task: Task) -> Task:
    """The task with its two label prompts exchanged: the zero-shot teacher says the opposite."""
    first, second = task.labels
    return task.model_copy(
        update={
            "labels": [
                first.model_copy(update={"prompt": second.prompt}),
                second.model_copy(update={"prompt": first.prompt}),
            ]
        }
    )


def make_world(args: argparse.Namespace, seed: int) -> World:
    from bench.sampling_data import teacher_logits

    settings = Settings(paths=PathSettings(state_dir=STATE))
    task = load_task(settings.paths.task_file)
    vader.fetch(settings.paths.data_dir)
    rows = [r for d in vader.DOMAINS for r in vader.load(d, settings.paths.data_dir)]
    rows = list({r.text: r for r in rows}.values())
    random.Random(seed).shuffle(rows)
    n_stream = args.steps * args.per_step
    eval_rows, seed_rows = rows[: args.eval_size], rows[args.eval_size : args.eval_size + 600]
    stream = rows[args.eval_size + 600 : args.eval_size + 600 + n_stream]
    texts = [r.text for r in eval_rows + seed_rows + stream]
    logits = {
        "normal": teacher_logits(texts, STATE / "teacher-normal.npz", settings, task),
        "swapped": teacher_logits(texts, STATE / "teacher-swapped.npz", settings, swapped(task)),
    }
    seed_texts = [r.text for r in seed_rows]
    return World(task, stream, eval_rows, seed_texts, logits, args, seed, settings)


def v1_for(world: World, teacher: str) -> Path:
    from bench.sampling_data import train_v1

    folder = STATE / f"v1-{teacher}-seed{world.seed}"
    key = f"{world.seed}:{len(world.seed_texts)}"
    marker = folder / "bench_key.txt"
    if not marker.is_file() or marker.read_text() != key:
        train_v1(world.settings, world.task, world.seed_texts, world.logits[teacher], folder)
        marker.write_text(key)
    return folder


def feedback_for(arm: Arm, truth: str, served: str, names: list[str], rng: Any) -> list[tuple]:
    """(key, rating, correction) per rater of one answer (the adversary's is dropped later in
    the arms without it)."""
    out: list[tuple] = []
    honest = (5, None) if served == truth else (1, truth)
    if arm.raters == "users":
        if rng.random() < 0.15:
            out.append(("open", *honest))
        return out
    if rng.random() < 0.10:
        out.append((HONEST[int(rng.integers(len(HONEST)))], *honest))
    if rng.random() < 0.30:  # drawn in every arm, so they all see the same honest ratings
        lie = next(n for n in names if n != truth)
        out.append((ADVERSARY, *((5, None) if served == lie else (1, lie))))
    return out


def label_row(
    rid: str,
    ts: float,
    text: str,
    logits: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    offset: int,
) -> dict[str, Any]:
    teacher = np.exp(logits - logits.max())
    return {
        "request_id": rid, "ts": ts, "predicted_at": ts, "text": text, "labels": names,
        "teacher_logits": [float(x) for x in logits],
        "teacher_probs": [float(x) for x in teacher / teacher.sum()],
        "student_probs": [float(x) for x in probs], "model_version": 1,
        "teacher_id": "embedding", "topic": Topics.LABELS, "partition": 0, "offset": offset,
    }  # fmt: skip


def accuracy(student: Student, rows: list[vader.VaderRow], names: list[str]) -> float:
    probs = student.predict_proba([r.text for r in rows])
    return float(np.mean([names[i] == r.label for i, r in zip(probs.argmax(1), rows, strict=True)]))


def teacher_accuracy(
    logits: dict[str, np.ndarray], rows: list[vader.VaderRow], names: list[str]
) -> float:
    return float(np.mean([names[int(logits[r.text].argmax())] == r.label for r in rows]))


def one_round(
    world: World,
    arm: Arm,
    student: Student,
    labels: pd.DataFrame,
    feedback: pd.DataFrame,
    since: float,
    step: int,
) -> tuple[Student, dict[str, Any], float]:
    settings = world.settings
    people = human_labels.apply(labels, feedback, world.task, arm.trust, float("inf"))
    cfg = settings.train
    data = build_round(
        people.rows, since, cfg.window_size, cfg.replay_ratio, cfg.holdout_fraction,
        cfg.seed, cfg.bad_rating_max, cfg.bad_agreement_weight,
    )  # fmt: skip
    import torch

    from bench.sampling_data import train_config

    torch.manual_seed(world.seed * 1000 + step)  # dropout: the same in every arm of a seed
    model = copy.deepcopy(student.model)
    fit(model, data.train, student.tokenizer, train_config(settings, False, cfg.seed + step))
    candidate = Student(model, student.tokenizer, settings.serve.max_tokens)
    gate_cfg = GateSettings(referee=arm.referee)  # type: ignore[arg-type]
    cand = gate.measure(candidate, data.holdout, data.golden)
    cur = gate.measure(student, data.holdout, data.golden)
    at_chance = people.teacher_at_chance(gate_cfg.min_golden_rows)
    report = gate.decide(cand, cur, gate_cfg, at_chance)
    gaps = (gate.teacher_gap(cand, gate_cfg), gate.teacher_gap(cur, gate_cfg))
    point: dict[str, Any] = {
        "passed": report.passed, "referee": report.referee, "reason": report.reason,
        "failed": [c.name for c in report.checks if not c.passed],
        "golden_rows": cand.golden_rows, "train_rows": len(data.train),
        "teacher_gap": max((g for g in gaps if g is not None), default=None),
        "human_rows": int((data.train["correction"] >= 0).sum()),
        "kd_weight": float(data.train["kd_weight"].mean()),
    }  # fmt: skip
    if people.trust is not None:
        point["weights"] = {k.source: round(k.weight, 3) for k in people.trust.keys}
        point["teacher_weight"] = round(people.trust.teacher.weight, 3)
    return (candidate if report.passed else student), point, data.lineage.window_end_ts


def simulate(world: World, arm: Arm) -> dict[str, Any]:
    teacher = "swapped" if arm.scenario == "swapped" else "normal"
    logits, names = world.logits[teacher], world.task.label_names
    student = Student.load(v1_for(world, teacher), world.settings.serve.max_tokens)
    rng = np.random.default_rng(world.seed)
    labels: list[dict] = []
    feedback: list[dict] = []
    since, ratings = 0.0, 0
    points = [
        {
            "round": 0,
            "ratings": 0,
            "labels": 0,
            "accuracy": accuracy(student, world.eval_rows, names),
        }
    ]
    per = world.args.per_step
    for step in range(world.args.steps):
        chunk = world.stream[step * per : (step + 1) * per]
        probs = student.predict_proba([r.text for r in chunk])  # (N, C)
        for i, (row, p) in enumerate(zip(chunk, probs, strict=True)):
            ts = float(step * per + i + 1)
            rid = f"r{int(ts):06d}"
            served = names[int(p.argmax())]
            rated = feedback_for(arm, row.label, served, names, rng)
            kept = [r for r in rated if arm.adversary or r[0] != ADVERSARY]
            # every rated request reaches the teacher (as recall does), the adversary's too, in
            # every arm: the arms without it differ only in its feedback, not in their labels
            if rng.random() < world.args.teacher_share or rated:
                labels.append(label_row(rid, ts, row.text, logits[row.text], p, names, len(labels)))
            for key, rating, correction in kept:
                ratings += key != ADVERSARY
                feedback.append({
                    "request_id": rid, "ts": ts + 0.5, "rating": rating,
                    "corrected_label": correction, "predicted_label": served,
                    "model_version": 1, "key_id": key,
                })  # fmt: skip
        student, point, since = one_round(
            world, arm, student, pd.DataFrame(labels), pd.DataFrame(feedback), since, step
        )
        point.update(round=step + 1, ratings=ratings, labels=len(labels),
                     accuracy=accuracy(student, world.eval_rows, names))  # fmt: skip
        print(f"{arm.scenario}/{arm.name} round {step + 1}: {point['accuracy']:.3f} "
              f"({ratings} ratings) {point['reason'][:90]}", flush=True)  # fmt: skip
        points.append(point)
    return {
        "scenario": arm.scenario, "arm": arm.name, "teacher": teacher, "seed": world.seed,
        "teacher_accuracy": teacher_accuracy(logits, world.eval_rows, names), "points": points,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--per-step", type=int, default=700)
    parser.add_argument("--eval-size", type=int, default=400)
    parser.add_argument("--teacher-share", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, default=3, help="streams (shuffles) per arm")
    parser.add_argument("--only", default=None, help="run only this scenario")
    args = parser.parse_args()
    start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        world = make_world(args, seed)
        runs += [simulate(world, arm) for arm in arms() if args.only in (None, arm.scenario)]
    payload = {
        "command": "python -m bench.people",
        "args": vars(args),
        "seconds": round(time.perf_counter() - start, 1),
        "runs": runs,
    }
    write_results("people", payload, render(payload))
    plot(payload, ROOT / "bench" / "results" / "people.png")
    print(render(payload))


if __name__ == "__main__":
    main()
