"""A whole retraining cycle: data → Ray Train round → registry → gate → rollout (or promote).

It ends in the registry: a rejected candidate, a rollout started, or a promoted version.
Telling Serve is the promote path's job (``monitoring.promotion``), which reads the registry.

``bootstrap`` makes version 1 when the registry is empty: the teacher labels a seed slice of
traffic (the task's ``seed_file``), which also stays in the store as replay for later rounds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillery.contracts import GateReport, Outcome, RoundReport, TriggerRecord
from distillery.settings import Settings
from distillery.task import Task
from feedback import human_labels, trust_report
from feedback.examples import read_kind, read_labels, supersede_relabelled
from feedback.keys import trusted_keys
from feedback.store import write_shard
from models.student import Student
from training import gate, replay, selective
from training.data import OldLabels, RoundData, build_round
from training.registry import Registry, VersionMeta
from training.round import run_round

log = logging.getLogger(__name__)


def window_start(registry: Registry) -> float:
    """Labels newer than this are 'recent': the end of the promoted version's data window."""
    current = registry.current()
    return 0.0 if current is None else registry.get(current).lineage.window_end_ts


def last_round_end(registry: Registry) -> tuple[float, float]:
    """(window end, wall time) of the newest registered version, promoted or not."""
    versions = registry.versions()
    if not versions:
        return 0.0, 0.0
    meta = registry.get(versions[-1])
    return meta.lineage.window_end_ts, meta.created


def round_data(settings: Settings, task: Task, registry: Registry) -> RoundData:
    """The example store as a round sees it: recent window + replay, holdout, golden set, with
    the human labels weighed by trust (the estimate is kept in ``state/trust.json``)."""
    store = settings.paths.store_dir
    labels = supersede_relabelled(read_labels(store))
    people = human_labels.apply(
        labels, read_kind(store, "feedback"), task, settings.trust, settings.store.join_window_s,
        trusted_keys(settings),
    )  # fmt: skip
    rows = people.rows
    if rows.empty:
        raise RuntimeError("the example store holds no teacher labels yet: nothing to train on")
    if people.trust is not None:
        trust_report.save(settings.paths.state_dir, people.trust)
    cfg = settings.train
    data = build_round(
        rows,
        window_start(registry),
        cfg.window_size,
        cfg.replay_ratio,
        cfg.holdout_fraction,
        cfg.seed,
        cfg.bad_rating_max,
        cfg.bad_agreement_weight,
        replay.load(settings.paths.replay_dir, cfg.replay_capacity),
        old_label_policy(settings, task, rows),
        settings.gate.retained_rows,
    )
    members = people.trust.members if people.trust is not None else []
    shares = {m.source: m.share for m in members if m.share is not None}
    lineage = data.lineage.model_copy(
        update={"trust": settings.trust.mode, "ensemble_shares": shares}
    )
    at_chance = people.teacher_at_chance(settings.gate.min_golden_rows)
    return dataclasses.replace(data, lineage=lineage, teacher_at_chance=at_chance)


def old_label_policy(settings: Settings, task: Task, rows: Any) -> OldLabels:
    """The configured teacher's id (or, if only its endpoint knows its model, the newest
    label's), and what ``teacher.old_labels`` says to do with the labels of any other."""
    from models.factory import configured_teacher_id

    current = configured_teacher_id(settings.teacher, task)
    if current is None and "teacher_id" in rows:
        named = rows.sort_values("ts")["teacher_id"].dropna()
        current = str(named.iloc[-1]) if len(named) else None
    cfg = settings.teacher
    weight = cfg.old_label_weight if cfg.old_labels == "downweight" else 1.0
    return OldLabels(current, cfg.old_labels, weight)


def retrain(
    settings: Settings,
    task: Task,
    reason: str,
    trigger: TriggerRecord | None = None,
    serving: bool = False,
) -> RoundReport:
    """Run one round from the example store; its candidate goes through ``admit``.
    ``trigger`` is recorded with the version; default: an operator's."""
    start = time.monotonic()
    registry = Registry(settings.paths.model_store_url())
    data = round_data(settings, task, registry)
    gate.check_holdout(len(data.holdout), settings.gate, settings.train.holdout_fraction)
    parent = registry.current()
    name = f"round-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}"
    log.info("round %s: %d rows (%s)", name, len(data.train), reason)
    cache = settings.paths.model_cache_path()
    parent_dir = None if parent is None else registry.local_dir(parent, cache)
    checkpoint, metrics = run_round(settings, task, data, parent_dir, name)
    if data.reservoir is not None:  # the rows this round offered stay offered
        replay.save(data.reservoir, settings.paths.replay_dir)
    trigger = trigger or TriggerRecord.operator(reason)
    report = admit(settings, registry, checkpoint, metrics, data, reason, trigger, serving)
    return report.model_copy(update={"seconds": time.monotonic() - start})


def submit(
    settings: Settings,
    task: Task,
    model_dir: Path,
    reason: str,
    serving: bool = False,
) -> RoundReport:
    """A student trained elsewhere (an operator's): registered, gated on the store's current
    holdout and golden set, and rolled out exactly like a round's candidate."""
    start = time.monotonic()
    registry = Registry(settings.paths.model_store_url())
    data = round_data(settings, task, registry)
    trigger = TriggerRecord.operator(reason)
    report = admit(settings, registry, model_dir, {}, data, reason, trigger, serving)
    return report.model_copy(update={"seconds": time.monotonic() - start})


def admit(
    settings: Settings,
    registry: Registry,
    model_dir: Path,
    metrics: dict[str, float],
    data: RoundData,
    reason: str,
    trigger: TriggerRecord,
    serving: bool,
) -> RoundReport:
    """Register ``model_dir`` as a candidate and gate it against the current student. Passing,
    it starts a shadow → canary rollout (``rollout.enabled``, a current student, and Serve
    ``serving`` it), or is promoted at once; failing, it is rejected with each failing check
    recorded. Serve learns of it from ``monitoring.promotion``."""
    parent = registry.current()
    meta = VersionMeta(
        version=0,
        lineage=data.lineage.model_copy(update={"parent": parent}),
        config={"train": settings.train.model_dump(), "student": settings.student.model_dump()},
        metrics=metrics,
        trigger=trigger,
    )
    meta = registry.register(model_dir, meta)
    report, measured = _gate(settings, registry, meta.version, parent, data)
    cfg = settings.cascade
    offered = selective.offer(measured, cfg.target_share, cfg.delta, settings.gate.min_golden_rows)
    registry.update(meta.version, cascade=offered)
    outcome = settle(settings, registry, meta.version, report, reason, serving)
    return RoundReport(
        version=meta.version, parent=parent, promoted=outcome == "promoted",
        reason=report.reason, gate=report, train_metrics=metrics,
        rows=len(data.train), seconds=0.0, outcome=outcome, trigger=trigger,
        window_end_ts=data.lineage.window_end_ts,
    )  # fmt: skip


def settle(
    settings: Settings,
    registry: Registry,
    version: int,
    report: GateReport,
    reason: str,
    serving: bool,
) -> Outcome:
    """A gated candidate's fate: rejected with each failing check recorded; a rollout from
    shadow beside the current version (``rollout.enabled``, a current version, and Serve
    ``serving``); or promoted at once. Classifiers and generate tasks alike."""
    if not report.passed:
        registry.reject(version, f"gate: {report.reason}", report)
        return "rejected"
    registry.update(version, gate=report)
    why = f"{reason}; gate: {report.reason}"
    if settings.rollout.enabled and registry.current() is not None and serving:
        registry.start_rollout(version, why)
        return "shadow"
    registry.promote(version, why)
    return "promoted"


def _gate(
    settings: Settings, registry: Registry, candidate: int, current: int | None, data: RoundData
) -> tuple[GateReport, gate.Measures]:
    """The gate's verdict on ``candidate`` against ``current``, and the candidate's measures."""
    max_tokens, cache = settings.serve.max_tokens, settings.paths.model_cache_path()
    cand_student = Student.load(registry.local_dir(candidate, cache), max_tokens)
    cur_student = None
    if current is not None:
        cur_student = Student.load(registry.local_dir(current, cache), max_tokens)
    texts = list(data.holdout["text"][:60])
    students = [cand_student] if cur_student is None else [cand_student, cur_student]
    p50 = gate.latency_p50(students, texts) if texts else [None, None]
    cand = gate.measure(cand_student, data.holdout, data.golden, p50[0], data.retained)
    cur = None
    if cur_student is not None:
        cur = gate.measure(cur_student, data.holdout, data.golden, p50[1], data.retained)
    report = gate.decide(cand, cur, settings.gate, data.teacher_at_chance)
    details = {"candidate": asdict(cand), "current": None if cur is None else asdict(cur)}
    log.info("gate v%d vs v%s: %s %s", candidate, current, report.reason, json.dumps(details))
    return report, cand


def seed_rows(settings: Settings, task: Task) -> int:
    """Teacher-label the seed slice into the store; returns the number of rows written."""
    from models.factory import seed_teacher
    from models.teacher_labels import to_labels

    texts = seed_texts(settings, task)
    teacher = seed_teacher(settings.teacher, task, settings.paths.state_dir)
    events = _seed_events(texts, len(task.labels))
    labels = to_labels(events, task, teacher, settings.train.hidden_weight > 0).labels
    rows = [
        {**lab.model_dump(), "topic": "seed", "partition": 0, "offset": i}
        for i, lab in enumerate(labels)
    ]
    write_shard(settings.paths.store_dir, "labels", rows)
    return len(rows)


def seed_texts(settings: Settings, task: Task) -> list[str]:
    """The ``seed_size`` texts of the task's seed file that version 1 is distilled from, spread
    evenly over the file."""
    if task.seed_file is None or not task.seed_file.is_file():
        raise FileNotFoundError(f"seed file {task.seed_file} missing: run `make data` first")
    lines = task.seed_file.read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    return _spread(texts, settings.scheduler.seed_size)


def _spread(texts: list[str], n: int) -> list[str]:
    step = max(1, len(texts) // n)
    return texts[::step][:n]


def _seed_events(texts: list[str], n_labels: int) -> list[Any]:
    from distillery import bus
    from distillery.events import SampledPrediction

    uniform = [1.0 / n_labels] * n_labels
    return [
        (
            bus.Record("seed", 0, i, b""),
            SampledPrediction(
                request_id=f"seed-{i:06d}", text=t, student_probs=uniform, model_version=0
            ),
        )
        for i, t in enumerate(texts)
    ]


def bootstrap(settings: Settings, task: Task) -> RoundReport | None:
    """Make and promote version 1 from seed traffic if the registry is empty; else None."""
    registry = Registry(settings.paths.model_store_url())
    if registry.current() is not None:
        return None
    if read_labels(settings.paths.store_dir).empty:
        seed_rows(settings, task)
    why = "bootstrap from seed traffic"
    report = retrain(settings, task, why, TriggerRecord.bootstrap(why))
    if not report.promoted:
        raise RuntimeError(f"the first student failed its gate: {report.reason}")
    return report
