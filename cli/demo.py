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
from typing import Any, Literal

import httpx
import numpy as np

from distillery import vader
from distillery.settings import Settings
from distillery.task import load_task
from monitoring.status import Status

CHUNK = 16  # texts per request


RoundOutcome = Literal["promoted", "rejected", "rolled back"]


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
    # the served student's agreement with the teacher on the held-out texts, before and after:
    # what distillation itself moves, even where the student already nears the teacher on the
    # human labels (absent from results written before it was measured)
    agreement_before: float | None = None
    agreement_after: float | None = None
    # the phase's round as data (``round`` is its verdict in words); None: no round, or a
    # result written before these were kept
    round_version: int | None = None
    round_outcome: RoundOutcome | None = None


@dataclass
class Score:
    """The served student on one domain's held-out texts: against their human labels and
    against the teacher's."""

    domain: str
    version: int
    accuracy: float
    agreement: float


@dataclass
class DemoResult:
    phases: list[Phase] = field(default_factory=list)
    # every domain's held-out texts, scored before the first phase and after the last: what the
    # whole loop gained over the student it started from (absent from older results)
    start: list[Score] = field(default_factory=list)
    end: list[Score] = field(default_factory=list)

    def table(self) -> str:
        columns = ["phase", "teacher acc", "student before", "student after", "version"]
        columns += ["texts", "feedback", "round", "wait for round"]
        agreement = any(p.agreement_after is not None for p in self.phases)
        columns += ["agreement with teacher"] if agreement else []
        rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for p in self.phases:
            cells = [
                p.domain, f"{p.teacher_accuracy:.3f}", f"{p.student_before:.3f}",
                f"{p.student_after:.3f}", f"v{p.version_before} → v{p.version_after}",
                str(p.requests), str(p.feedback), p.round, f"{p.wait_s:.0f} s",
            ]  # fmt: skip
            if agreement:
                cells.append(f"{p.agreement_before or 0:.3f} → {p.agreement_after or 0:.3f}")
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows) + self.gain_table()

    def gain_table(self) -> str:
        """What the whole loop gained on each domain's held-out texts; empty if not measured."""
        if not (self.start and self.end):
            return ""
        rows = [
            "",
            "",
            "| held out | start: accuracy, agreement | end: accuracy, agreement |",
            "|---|---|---|",
        ]
        for a, b in zip(self.start, self.end, strict=True):
            rows.append(
                f"| {a.domain} | v{a.version}: {a.accuracy:.3f}, {a.agreement:.3f} | "
                f"v{b.version}: {b.accuracy:.3f}, {b.agreement:.3f} |"
            )
        return "\n".join(rows)

    def gain(self) -> tuple[float, float]:
        """The loop's held-out gain over every domain's texts together, (accuracy, agreement):
        the student at the end less the one at the start (the domains' sets are one size)."""
        start = np.mean([[s.accuracy, s.agreement] for s in self.start], axis=0)
        end = np.mean([[s.accuracy, s.agreement] for s in self.end], axis=0)
        return float(end[0] - start[0]), float(end[1] - start[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": [asdict(p) for p in self.phases],
            "start": [asdict(s) for s in self.start],
            "end": [asdict(s) for s in self.end],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoResult:
        return cls(
            phases=[Phase(**p) for p in data["phases"]],
            start=[Score(**s) for s in data.get("start", [])],
            end=[Score(**s) for s in data.get("end", [])],
        )


def predict(client: httpx.Client, texts: list[str], train: bool) -> list[dict[str, Any]]:
    response = client.post("/v1/predict", json={"text": texts, "allow_training": train})
    response.raise_for_status()
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def served_labels(client: httpx.Client, rows: list[vader.VaderRow]) -> tuple[list[str], int]:
    """The served student's labels for rows (never sampled) and the version that answered."""
    answers: list[dict[str, Any]] = []
    for i in range(0, len(rows), CHUNK):
        answers += predict(client, [r.text for r in rows[i : i + CHUNK]], train=False)
    return [a["label"] for a in answers], max(a["model_version"] for a in answers)


def accuracy(client: httpx.Client, rows: list[vader.VaderRow]) -> tuple[float, int]:
    """Served student's accuracy on rows (never sampled) and the version that answered."""
    labels, version = served_labels(client, rows)
    return share_equal(labels, [r.label for r in rows]), version


def share_equal(a: list[str], b: list[str]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


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


@dataclass(frozen=True)
class RoundEnd:
    """How a phase's round ended: its version and outcome, and the verdict in words."""

    version: int | None
    outcome: RoundOutcome | None
    verdict: str


NO_ROUND = RoundEnd(None, None, "no round")


def _ended(status: Status) -> RoundEnd:
    last = status.last_round
    assert last is not None
    if status.current_version == last.version:
        return RoundEnd(last.version, "promoted", f"v{last.version} promoted")
    if last.outcome == "rejected" or last.gate is None or not last.gate.passed:
        return RoundEnd(last.version, "rejected", f"v{last.version} rejected ({last.reason})")
    return RoundEnd(last.version, "rolled back", f"v{last.version} rolled back")


def wait_for_round(
    client: httpx.Client,
    since_ts: float,
    timeout_s: float,
    traffic: list[vader.VaderRow],
    feedback_rate: float,
    poll_s: float = 2.0,
) -> tuple[RoundEnd, float]:
    """Wait for the first round that read a label newer than ``since_ts`` (so it started after
    then, with the phase's traffic in its data) to end: its gate decides and any rollout it
    starts ends. Traffic keeps flowing meanwhile, as it would live: triggers need new labels
    and a rollout judges its candidate on live answers. A round that started earlier is not the
    phase's: the e2e test met a movies round, started before any tweet was labelled, taken for
    the tweets phase's round. ``since_ts`` is this machine's clock, as is the server's."""
    start = time.monotonic()
    stop = threading.Event()
    busy = threading.Thread(
        target=keep_busy, args=(client, traffic, feedback_rate, stop), daemon=True
    )
    busy.start()
    try:
        while time.monotonic() - start < timeout_s:
            try:
                status = read_status(client)
            except httpx.HTTPError:  # a 503 while a round and the traffic busy both cores
                time.sleep(poll_s)
                continue
            last = status.last_round
            ended = last is not None and (last.window_end_ts or 0.0) >= since_ts
            if ended and status.rollout is None:  # its rollout, if any, has ended too
                return _ended(status), time.monotonic() - start
            time.sleep(poll_s)
        return NO_ROUND, time.monotonic() - start
    finally:
        stop.set()


def teacher_labels(rows: list[vader.VaderRow], settings: Settings) -> list[str]:
    """The configured teacher's label for each row."""
    from models.factory import build_teacher

    task = load_task(settings.paths.task_file)
    teacher = build_teacher(settings.teacher, task, settings.paths.state_dir)
    texts = [r.text for r in rows]
    size = settings.teacher.labeler_batch()
    predicted = np.concatenate(
        [teacher.label(texts[i : i + size]).probs for i in range(0, len(texts), size)]
    ).argmax(1)
    return [task.label_names[i] for i in predicted]


def teacher_accuracy(rows: list[vader.VaderRow], settings: Settings) -> float:
    return share_equal(teacher_labels(rows, settings), [r.label for r in rows])


@dataclass
class Held:
    """One domain: its held-out texts with the teacher's labels, and its traffic."""

    domain: str
    rows: list[vader.VaderRow]
    taught: list[str]
    traffic: list[vader.VaderRow]

    def score(self, client: httpx.Client) -> Score:
        served, version = served_labels(client, self.rows)
        human = [r.label for r in self.rows]
        return Score(
            self.domain, version, share_equal(served, human), share_equal(served, self.taught)
        )


def held_out(domain: str, settings: Settings, sizes: tuple[int, int]) -> Held:
    """``domain``'s first ``eval_size`` texts (a fixed shuffle) held out, the next ``per_phase``
    as traffic."""
    eval_size, per_phase = sizes
    rows = vader.load(domain, settings.paths.data_dir)
    random.Random(1).shuffle(rows)
    held = rows[:eval_size]
    return Held(domain, held, teacher_labels(held, settings), rows[eval_size:][:per_phase])


def run_phase(
    client: httpx.Client,
    held: Held,
    timeout_s: float,
    feedback_rate: float,
    say: Callable[[str], Any],
) -> Phase:
    """Score on held-out texts, replay traffic, wait for the round it triggers, score again."""
    domain, traffic = held.domain, held.traffic
    teacher = share_equal(held.taught, [r.label for r in held.rows])
    before = held.score(client)
    say(f"{domain}: teacher {teacher:.3f}, student v{before.version} {before.accuracy:.3f}; "
        f"{len(traffic)} texts")  # fmt: skip
    feedback = replay(client, traffic, feedback_rate)
    ended, waited = wait_for_round(client, time.time(), timeout_s, traffic, feedback_rate)
    after = held.score(client)
    say(f"{domain}: round {ended.verdict}; student v{after.version} {after.accuracy:.3f} "
        f"({waited:.0f}s)")  # fmt: skip
    return Phase(
        domain, teacher, before.accuracy, after.accuracy, before.version, after.version,
        len(traffic), feedback, ended.verdict, waited, before.agreement, after.agreement,
        ended.version, ended.outcome,
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
    """Each domain in turn as live traffic; returns per-phase accuracy before and after, and
    every domain's held-out score at the start and at the end."""
    settings = Settings()
    sets = [held_out(domain, settings, (eval_size, per_phase)) for domain in domains]
    with httpx.Client(base_url=url, timeout=60) as client:
        result = DemoResult(start=[held.score(client) for held in sets])
        for held in sets:
            result.phases.append(run_phase(client, held, timeout_s, feedback_rate, say))
        result.end = [held.score(client) for held in sets]
    return result
