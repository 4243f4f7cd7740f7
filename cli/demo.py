"""``distillery demo``: VADER movie reviews, then tweets, replayed as live traffic over HTTP.

Per phase it scores the teacher and the served student against the human labels on held-out
texts (sent with ``allow_training: false`` so they never train), before the phase's traffic and
after the automatic retrain the traffic causes. A share of users send feedback: a rating, and
the right label when the answer was wrong.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np

from distillery import vader
from distillery.settings import Settings
from distillery.task import load_task
from monitoring.status import Status

CHUNK = 16  # texts per request


@dataclass
class Phase:
    domain: str
    teacher_accuracy: float
    student_before: float
    student_after: float
    version_before: int
    version_after: int
    requests: int
    feedback: int
    round: str
    wait_s: float


@dataclass
class DemoResult:
    phases: list[Phase] = field(default_factory=list)

    def table(self) -> str:
        columns = ["phase", "teacher acc", "student before", "student after", "version"]
        columns += ["texts", "feedback", "round", "wait for round"]
        rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for p in self.phases:
            rows.append(
                f"| {p.domain} | {p.teacher_accuracy:.3f} | {p.student_before:.3f} | "
                f"{p.student_after:.3f} | v{p.version_before} → v{p.version_after} | "
                f"{p.requests} | {p.feedback} | {p.round} | {p.wait_s:.0f} s |"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"phases": [asdict(p) for p in self.phases]}


def predict(client: httpx.Client, texts: list[str], train: bool) -> list[dict[str, Any]]:
    response = client.post("/v1/predict", json={"text": texts, "allow_training": train})
    response.raise_for_status()
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def accuracy(client: httpx.Client, rows: list[vader.VaderRow]) -> tuple[float, int]:
    """Served student's accuracy on rows (never sampled) and the version that answered."""
    answers: list[dict[str, Any]] = []
    for i in range(0, len(rows), CHUNK):
        answers += predict(client, [r.text for r in rows[i : i + CHUNK]], train=False)
    hits = [a["label"] == r.label for a, r in zip(answers, rows, strict=True)]
    return float(np.mean(hits)), max(a["model_version"] for a in answers)


def rate_as_user(
    client: httpx.Client, answer: dict[str, Any], row: vader.VaderRow
) -> httpx.Response:
    """Rate ``answer`` like a user who knows ``row``'s label: 1 and the right label if it is
    wrong, 5 if it is right."""
    wrong = answer["label"] != row.label
    body = {
        "request_id": answer["request_id"],
        "feedback_token": answer["feedback_token"],
        "rating": 1 if wrong else 5,
        "corrected_label": row.label if wrong else None,
    }
    return client.post("/v1/feedback", json=body)


def _one_chunk(
    client: httpx.Client, chunk: list[vader.VaderRow], feedback_rate: float, rng: random.Random
) -> int:
    """Send ``chunk`` as traffic; rate a share of answers like a user who knows the label
    (1 and the right label if wrong, 5 if right). Returns feedback posts sent."""
    sent = 0
    for answer, row in zip(predict(client, [r.text for r in chunk], True), chunk, strict=True):
        if rng.random() < feedback_rate:
            rate_as_user(client, answer, row).raise_for_status()
            sent += 1
    return sent


def replay(client: httpx.Client, rows: list[vader.VaderRow], feedback_rate: float) -> int:
    """Send rows as traffic with 4 concurrent clients; returns feedback posts sent."""
    rng = random.Random(0)
    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(lambda c: _one_chunk(client, c, feedback_rate, rng), chunks))


def keep_busy(
    client: httpx.Client, rows: list[vader.VaderRow], feedback_rate: float, stop: threading.Event
) -> None:
    """Replay ``rows`` again, 8 texts every 0.3 s, until ``stop``: a rollout judges its
    candidate on live traffic and feedback, so some must flow while it runs."""
    rng = random.Random(2)
    i = 0
    while not stop.wait(0.3):
        chunk = [rows[(i + k) % len(rows)] for k in range(8)]
        i += 8
        try:
            _one_chunk(client, chunk, feedback_rate, rng)
        except httpx.HTTPError:
            continue


def read_status(client: httpx.Client) -> Status:
    """``GET /v1/status``, read back into the scheduler's own model."""
    response = client.get("/v1/status")
    response.raise_for_status()
    return Status.model_validate(response.json())


def newest_version(client: httpx.Client) -> int:
    return max(read_status(client).versions, default=0)


def _verdict(status: Status) -> str:
    last = status.last_round
    assert last is not None
    if status.current_version == last.version:
        return f"v{last.version} promoted"
    if last.outcome == "rejected" or last.gate is None or not last.gate.passed:
        return f"v{last.version} rejected ({last.reason})"
    return f"v{last.version} rolled back"


def wait_for_round(
    client: httpx.Client,
    after: int,
    timeout_s: float,
    traffic: list[vader.VaderRow],
    feedback_rate: float,
) -> tuple[str, float]:
    """Wait until a round registers a version newer than ``after``, its gate decides and any
    rollout it starts ends; traffic keeps flowing while the rollout runs."""
    start = time.monotonic()
    stop = threading.Event()
    busy = threading.Thread(
        target=keep_busy, args=(client, traffic, feedback_rate, stop), daemon=True
    )
    try:
        while time.monotonic() - start < timeout_s:
            status = read_status(client)
            last_version = status.last_round.version if status.last_round else 0
            if status.rollout is not None and not busy.is_alive():
                busy.start()
            settled = not status.round_running and status.rollout is None
            if last_version > after and settled:
                return _verdict(status), time.monotonic() - start
            current = status.current_version or 0
            if current > after:  # promoted, and the next round already runs (steady traffic)
                return f"v{current} promoted", time.monotonic() - start
            time.sleep(2)
        return "no round", time.monotonic() - start
    finally:
        stop.set()


def teacher_accuracy(rows: list[vader.VaderRow], settings: Settings) -> float:
    from models.factory import build_teacher

    task = load_task(settings.paths.task_file)
    teacher = build_teacher(settings.teacher, task, settings.paths.state_dir)
    texts = [r.text for r in rows]
    size = settings.teacher.labeler_batch()
    predicted = np.concatenate(
        [teacher.label(texts[i : i + size]).probs for i in range(0, len(texts), size)]
    ).argmax(1)
    return float(
        np.mean([task.label_names[i] == r.label for i, r in zip(predicted, rows, strict=True)])
    )


def run_phase(
    client: httpx.Client,
    domain: str,
    settings: Settings,
    sizes: tuple[int, int],
    timeout_s: float,
    feedback_rate: float,
    say: Callable[[str], Any],
) -> Phase:
    """Score on held-out texts, replay traffic, wait for the round it triggers, score again."""
    eval_size, per_phase = sizes
    rows = vader.load(domain, settings.paths.data_dir)
    random.Random(1).shuffle(rows)
    held, traffic = rows[:eval_size], rows[eval_size : eval_size + per_phase]
    teacher = teacher_accuracy(held, settings)
    before, version = accuracy(client, held)
    say(f"{domain}: teacher {teacher:.3f}, student v{version} {before:.3f}; {len(traffic)} texts")
    newest = newest_version(client)
    feedback = replay(client, traffic, feedback_rate)
    verdict, waited = wait_for_round(client, newest, timeout_s, traffic, feedback_rate)
    after, new_version = accuracy(client, held)
    say(f"{domain}: round {verdict}; student v{new_version} {after:.3f} ({waited:.0f}s)")
    return Phase(
        domain, teacher, before, after, version, new_version, len(traffic), feedback,
        verdict, waited,
    )  # fmt: skip


def run_demo(
    url: str,
    per_phase: int,
    eval_size: int,
    timeout_s: float,
    domains: tuple[str, ...] = ("movies", "tweets"),
    feedback_rate: float = 0.05,
    say: Callable[[str], Any] = print,
) -> DemoResult:
    """Each domain in turn as live traffic; returns per-phase accuracy before and after."""
    settings = Settings()
    result = DemoResult()
    with httpx.Client(base_url=url, timeout=60) as client:
        for domain in domains:
            sizes = (eval_size, per_phase)
            phase = run_phase(client, domain, settings, sizes, timeout_s, feedback_rate, say)
            result.phases.append(phase)
    return result
