"""The scheduler's watch on a real (tiny) example store and registry: drift by kind between the
serving version's training window and the traffic since, quality per version, the series kept
on disk, the HTML report, and the triggers' signals."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import BertTokenizer

from distillery.settings import (
    MonitorSettings,
    PathSettings,
    Settings,
    StudentSettings,
    TrainSettings,
)
from distillery.task import Task
from feedback.store import write_shard
from models.student import new_student
from monitoring import quality
from monitoring.watch import Watch
from training.chrf import chrf
from training.data import in_holdout
from training.registry import Lineage, Registry, VersionMeta

TASK = Task.model_validate(
    {"name": "sentiment", "labels": [{"name": "negative", "prompt": "bad"},
                                     {"name": "positive", "prompt": "good"}]}
)  # fmt: skip
SHORT = ["good", "bad film", "i love it", "the movie"]
LONG = ["the movie was very very good and i love it a great great film !"] * 4
EARLY = [f"{text} {i}" for i, text in enumerate(SHORT * 30)]  # 120 distinct texts: the holdout
LATE = [f"{text} {i}" for i, text in enumerate(LONG * 30)]  # splits by text (training.data)


def _labels(texts: list[str], t0: float, version: int, agree: bool) -> list[dict]:
    rows = []
    for i, text in enumerate(texts):
        student = [0.8, 0.2] if i % 2 else [0.3, 0.7]
        teacher = student if agree or i % 2 else student[::-1]
        rows.append(
            {"request_id": f"{t0}-{i}", "text": text, "ts": t0 + i, "predicted_at": t0 + i,
             "model_version": version, "student_probs": student, "teacher_probs": teacher}
        )  # fmt: skip
    return rows


@pytest.fixture
def setup(
    tmp_path: Path, tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings
) -> tuple[Settings, Registry, float]:
    settings = Settings(
        paths=PathSettings(state_dir=tmp_path),
        monitor=MonitorSettings(min_rows=10, html_every=2, signal_window_s=3_600),
        train=TrainSettings(bad_rating_max=2, holdout_fraction=0.2),
    )
    settings.paths.store_dir.mkdir(parents=True)
    now = time.time()
    cut = now - 600  # v1 was trained on traffic before this
    model = new_student(TASK.label_names, tiny_shape, tiny_tokenizer.vocab_size, seed=0)
    folder = tmp_path / "v1"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    registry = Registry(settings.paths.model_store_url())
    registry.register(folder, VersionMeta(version=0, lineage=Lineage(window_end_ts=cut)))
    registry.promote(1, "test")
    store = settings.paths.store_dir
    write_shard(store, "labels", _labels(EARLY, cut - 300, 1, agree=True))
    write_shard(store, "labels", _labels(LATE, cut + 60, 1, agree=False))
    feedback = [
        {"request_id": f"f{i}", "rating": 1 if i < 3 else 5, "ts": now - 10, "model_version": 1}
        for i in range(4)
    ]
    write_shard(store, "feedback", feedback)
    return settings, registry, cut


def test_a_shifted_window_drifts_and_quality_and_series_are_measured(
    setup: tuple[Settings, Registry, float],
) -> None:
    settings, registry, _ = setup
    watch = Watch(settings, TASK, registry)
    signals = watch.measure(new_labels=120, minutes_since_round=3.0)
    assert watch.drift is not None and watch.drift.version == 1
    shares = watch.drift.share
    assert set(shares) == {"features", "embedding", "prediction"}
    assert shares["features"] >= 0.5  # 14-word texts against 1–3 words
    assert signals.drift == max(shares.values())
    held_out = sum(in_holdout(text, 0.2) for text in EARLY)
    assert 10 <= held_out < 120  # the reference: training-window rows no round trained on
    assert (watch.drift.reference_rows, watch.drift.current_rows) == (held_out, 120)
    # the last hour's 240 labels: half of the 120 newest disagree, none of the older 120
    assert signals.disagreement == pytest.approx(60 / 240) and signals.labelled == 240
    assert (signals.rated, signals.negative_share) == (4, pytest.approx(0.75))
    assert signals.new_labels == 120 and signals.minutes_since_round == 3.0
    point = watch.series[-1]
    assert point.drift == shares and point.mean_rating == pytest.approx(2.0)
    reports = watch.reports.listing()
    assert len(reports) == 1 and reports[0].drift_share == shares  # the first check's


def test_series_survive_a_restart_and_reports_follow_html_every(
    setup: tuple[Settings, Registry, float],
) -> None:
    settings, registry, _ = setup
    watch = Watch(settings, TASK, registry)
    for _ in range(3):
        watch.measure(0, 0.0)
    assert len(watch.reports.listing()) == 2  # checks 1 and 3 (html_every=2)
    again = Watch(settings, TASK, registry)
    assert len(again.series) == 3 and again.series[-1].ts == watch.series[-1].ts


def test_too_few_rows_give_no_drift_but_still_a_point(
    setup: tuple[Settings, Registry, float],
) -> None:
    settings, registry, _ = setup
    strict = settings.model_copy(
        update={"monitor": settings.monitor.model_copy(update={"min_rows": 500})}
    )
    watch = Watch(strict, TASK, registry)
    signals = watch.measure(0, 0.0)
    assert signals.drift is None and watch.drift is None
    assert watch.series[-1].drift is None and watch.series[-1].disagreement is not None
    assert np.isfinite(watch.series[-1].labels_per_min)


def test_a_generate_tasks_disagreement_is_its_replies_chrf_against_the_teachers() -> None:
    teacher = "We're sorry the charger failed; a replacement is on its way."
    frame = pd.DataFrame({
        "model_version": [2, 2, 2, 1],
        "reply": [teacher, teacher, None, teacher],
        "student_reply": [teacher, "Thanks for shopping with us!", "x", "anything"],
    })  # fmt: skip
    labelled, disagreement = quality.reply_disagreement(frame, 2)
    other = chrf("Thanks for shopping with us!", teacher)
    assert labelled == 2  # the row the teacher could not answer, and v1's, are not counted
    assert disagreement == pytest.approx(1 - (100 + other) / 200) and 0 < other < 40
    assert quality.reply_disagreement(frame, 3) == (0, None)
    assert quality.reply_disagreement(frame.drop(columns="reply"), 2) == (0, None)  # a classifier
