"""A generate task's cycle: the store's replies → a Ray Train round → registry → gate → promote.

The same store, registry and round report as a classifier's (``training.cycle``); what differs is
the data (chats and replies, not soft labels), the round (SFT, ``training.generate_round``) and
the gate's signals (chrF and likelihood against the teacher's replies, and against the replies
people corrected: the golden set).

- Version 1 is the base student, never retrained (``bootstrap``): a generative student answers
  before it has learnt anything, unlike a classifier's fresh head.
- A row's target is the teacher's reply, or a person's corrected reply, which replaces it and
  weighs ``correction_weight``. Held out by a stable hash of the request id
  (``holdout_fraction``); held-out corrections are the golden set.
- The gate passes a candidate whose held-out chrF is within ``agreement_margin`` (× 100) of the
  current version's, and whose golden chrF (given ``min_golden_rows``) is too. Passing, it
  answers mirrored chats in shadow, then a canary's share of chats (``training.cycle.settle``),
  judged live on the same signals: its replies' chrF against the teacher's (in shadow, its
  unseen replies'), ratings, errors and latency; or, with no rollout, is promoted.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from distillery.contracts import GateCheck, GateReport, ReplyMeasures, RoundReport, TriggerRecord
from distillery.settings import Settings
from distillery.task import Task
from feedback.examples import from_keys, read_kind, read_labels
from feedback.keys import rating_keys
from models.generator import Generator
from models.gguf import STUDENT_GGUF_NAME, student_gguf
from models.gguf_export import GGUF_FILE, export
from models.llama_decoder import on_runtime
from training.cycle import settle
from training.data import held_out, newest_per_text, text_keys
from training.generate_round import chat_of, measure, run_round
from training.registry import Lineage, Registry, VersionMeta

log = logging.getLogger(__name__)
GATE_ROWS = 24  # held-out chats the gate answers with each version (two replies each)


@dataclass(frozen=True)
class Examples:
    train: pd.DataFrame  # messages (chat JSON), target, weight
    holdout: pd.DataFrame  # text, messages, reply
    golden: pd.DataFrame  # text, messages, corrected_reply
    lineage: Lineage
    pairs: pd.DataFrame  # messages (chat JSON), chosen, rejected: DPO's (``preference_pairs``)


def preference_pairs(
    train: pd.DataFrame, feedback: pd.DataFrame, settings: Settings
) -> pd.DataFrame:
    """A training row whose served reply (``student_reply``) a rating key rated
    ``dpo_max_rating`` or lower (its latest rating) is a pair: the correction, else the
    teacher's reply, chosen; the rated reply rejected. Only keys the rollout's checks believe
    (``feedback.keys.rating_keys``) count, so a liar's ratings make no pairs."""
    empty = pd.DataFrame({"messages": [], "chosen": [], "rejected": []})
    if feedback.empty or "rating" not in feedback or "student_reply" not in train:
        return empty
    rated = from_keys(feedback[feedback["rating"].notna()], rating_keys(settings))
    latest = rated.sort_values("ts", kind="stable").drop_duplicates("request_id", keep="last")
    bad = set(latest.loc[latest["rating"] <= settings.train.dpo_max_rating, "request_id"])
    rows = train[train["request_id"].isin(bad) & train["student_reply"].notna()]
    chosen = rows["corrected_reply"].where(rows["corrected_reply"].notna(), rows["reply"])
    pairs = pd.DataFrame(
        {"messages": rows["chat"], "chosen": chosen, "rejected": rows["student_reply"]}
    )
    return pairs[pairs["chosen"] != pairs["rejected"]].reset_index(drop=True)


def examples(settings: Settings, task: Task, parent: int | None) -> Examples:
    """The round's rows from the store: the newest ``window_size`` replies, corrected where a
    person gave the right one."""
    labels = read_labels(settings.paths.store_dir)
    if labels.empty or "reply" not in labels:
        raise RuntimeError("the example store holds no teacher replies yet: nothing to train on")
    labels = labels[labels["reply"].notna()].sort_values("ts").tail(settings.train.window_size)
    feedback = read_kind(settings.paths.store_dir, "feedback")
    fixes: dict[str, str] = {}
    if not feedback.empty and "corrected_reply" in feedback:
        latest = feedback.sort_values("ts").drop_duplicates("request_id", keep="last")
        named = latest[latest["corrected_reply"].notna()]
        fixes = dict(zip(named["request_id"], named["corrected_reply"], strict=True))
    chats = [json.dumps([t.model_dump() for t in chat_of(r, task)]) for _, r in labels.iterrows()]
    frame = labels.assign(chat=chats, corrected_reply=labels["request_id"].map(fixes))
    held = held_out(frame, settings.train.holdout_fraction)
    if len(frame) >= 2 and (not held.any() or held.all()):  # the gate and the round need both
        keys = text_keys(frame)
        held = keys == keys.iloc[-1]  # the newest text, every copy of it
        if held.all():  # one text only: its newest copy
            held = pd.Series([False] * (len(frame) - 1) + [True], index=frame.index)
    train = frame[~held]
    fixed = train["corrected_reply"].notna()
    rows = pd.DataFrame({
        "messages": train["chat"],
        "target": train["corrected_reply"].where(fixed, train["reply"]),
        "weight": fixed.map({True: settings.train.correction_weight, False: 1.0}).astype(float),
    })  # fmt: skip
    holdout = newest_per_text(frame[held]).tail(GATE_ROWS)
    golden = newest_per_text(frame[held & frame["corrected_reply"].notna()])
    pairs = preference_pairs(train, feedback, settings)
    lineage = Lineage(
        parent=parent, rows=len(rows), recent_rows=len(rows), correction_rows=int(fixed.sum()),
        teachers={str(k): int(v) for k, v in train["teacher_id"].value_counts().items()},
        window_end_ts=float(labels["ts"].max()), golden_rows=len(golden),
        preference_pairs=len(pairs),
    )  # fmt: skip
    return Examples(rows.reset_index(drop=True), holdout, golden, lineage, pairs)


def bootstrap(settings: Settings, task: Task) -> RoundReport | None:
    """Register and promote the base student as version 1 if the registry is empty."""
    registry = Registry(settings.paths.model_store_url())
    if registry.current() is not None:
        return None
    gguf = student_gguf(settings.paths.data_dir)
    base = Generator.from_gguf(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        base.save(Path(tmp))
        export(base.model, gguf, Path(tmp) / GGUF_FILE)  # what the Serve app decodes
        meta = registry.register(
            Path(tmp), VersionMeta(version=0, config={"base": STUDENT_GGUF_NAME})
        )
    why = f"bootstrap: the base student {STUDENT_GGUF_NAME}, never retrained (generate task)"
    registry.promote(meta.version, why)
    return RoundReport(
        version=meta.version, parent=None, promoted=True, reason=why, gate=None,
        train_metrics={}, rows=0, seconds=0.0, outcome="promoted",
        trigger=TriggerRecord.bootstrap(why),
    )  # fmt: skip


def _gated(settings: Settings, registry: Registry, version: int) -> Generator:
    """``version`` as the gate measures it: likelihoods in transformers, replies decoded on
    the Serve app's runtime (``DISTILLERY_SERVE_GENERATE_RUNTIME``)."""
    folder = registry.local_dir(version, settings.paths.model_cache_path())
    serve = settings.serve
    return on_runtime(
        Generator.load(folder), folder, serve.generate_runtime, serve.generate_threads,
        settings.paths.data_dir,
    )  # fmt: skip


def retrain(
    settings: Settings,
    task: Task,
    reason: str,
    trigger: TriggerRecord | None = None,
    serving: bool = False,
) -> RoundReport:
    """One round from the store; the candidate is gated against the current version. Passing,
    it starts a shadow (``rollout.enabled`` and Serve ``serving``), else is promoted at once."""
    start = time.monotonic()
    registry = Registry(settings.paths.model_store_url())
    parent = registry.current()
    if parent is None:
        raise RuntimeError("no promoted version to fine-tune: bootstrap first")
    data = examples(settings, task, parent)
    if data.train.empty or data.holdout.empty:
        raise RuntimeError(
            f"{len(data.train)} training and {len(data.holdout)} held-out replies: too few"
        )
    name = f"round-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6:06d}"
    cache = settings.paths.model_cache_path()
    init = registry.local_dir(parent, cache)
    checkpoint, metrics = run_round(settings, data.train, init, name, data.pairs)
    trigger = trigger or TriggerRecord.operator(reason)
    meta = registry.register(
        checkpoint, VersionMeta(version=0, lineage=data.lineage, metrics=metrics, trigger=trigger)
    )
    cand = measure(_gated(settings, registry, meta.version), task, data.holdout, data.golden)
    cur = measure(_gated(settings, registry, parent), task, data.holdout, data.golden)
    gate = decide(cand, cur, settings)
    log.info("gate v%d vs v%d: %s", meta.version, parent, gate.model_dump_json())
    outcome = settle(settings, registry, meta.version, gate, reason, serving)
    return RoundReport(
        version=meta.version, parent=parent, promoted=outcome == "promoted", reason=gate.reason,
        gate=gate, train_metrics=metrics, rows=len(data.train),
        seconds=time.monotonic() - start, outcome=outcome, trigger=trigger,
        window_end_ts=data.lineage.window_end_ts,
    )  # fmt: skip


def decide(cand: ReplyMeasures, cur: ReplyMeasures, settings: Settings) -> GateReport:
    """Pass when held-out chrF, and golden chrF with enough rows, stay within the margin."""
    margin = settings.gate.agreement_margin * 100
    held = GateCheck("chrf", cand.chrf, cur.chrf, cur.chrf - margin, cand.chrf >= cur.chrf - margin)
    checks = [held]
    golden, current = cand.golden_chrf, cur.golden_chrf
    enough = cand.golden_rows >= settings.gate.min_golden_rows
    if enough and golden is not None and current is not None:
        checks.append(
            GateCheck("golden_chrf", golden, current, current - margin, golden >= current - margin)
        )
    if not held.passed:
        why = f"held-out chrF {cand.chrf} < current {cur.chrf} - {margin:g}"
    elif not checks[-1].passed:
        why = f"golden chrF {golden} < current {current} - {margin:g}"
    else:
        why = f"held-out chrF {cand.chrf} (current {cur.chrf}), log-lik/token {cand.logp}"
    passed = all(c.passed for c in checks)
    return GateReport(passed=passed, checks=checks, reason=why, candidate=cand, current=cur)
