"""A round's data: joining labels with feedback, the stable holdout, window, replay, lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from distillery.events import FeedbackEvent, TeacherLabel, Topics
from distillery.task import Label, Task
from feedback.examples import join, read_kind, read_labels, supersede_relabelled
from feedback.store import write_shard
from training.data import (
    OldLabels,
    build_round,
    in_holdout,
    kd_weights,
    offset_ranges,
)
from training.replay import Reservoir

TASK = Task(
    name="sentiment",
    labels=(Label(name="negative", prompt="bad"), Label(name="positive", prompt="good")),
)
NAMES = ["negative", "positive"]


def _label_row(i: int, labels: Any = None, **extra: Any) -> dict[str, Any]:
    labels = NAMES if labels is None else labels
    logits = [float(i % 3), -float(i % 3)] + [0.0] * (len(labels) - 2)
    probs = list(np.exp(logits) / np.exp(logits).sum())
    row = {
        "schema_version": 1,
        "request_id": f"req-{i}",
        "ts": float(i),
        "text": f"text number {i}",
        "labels": labels,
        "teacher_logits": logits,
        "teacher_probs": probs,
        "student_probs": [1 / len(labels)] * len(labels),
        "model_version": 1,
        "source_partition": i % 2,
        "source_offset": i,
        "predicted_at": float(i),
        "reason": "uniform",
        "shadow_version": None,
        "shadow_probs": None,
        "shadow_reply": None,
        "teacher_embedding": None,
        "teacher_id": "embedding:minilm:aaaa",
        "members": None,
        "reply": None,
        "student_reply": None,
        "messages": None,
        "topic": Topics.LABELS,
        "partition": i % 2,
        "offset": 1000 + i,
    }
    row.update(extra)
    return row


def _feedback_row(i: int, rating: int, corrected: str | None, ts: float = 0.0) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "request_id": f"req-{i}",
        "ts": ts,
        "rating": rating,
        "corrected_label": corrected,
        "corrected_reply": None,
        "predicted_label": "positive",
        "model_version": 1,
        "key_id": None,
        "topic": Topics.FEEDBACK,
        "partition": 0,
        "offset": i,
    }


def _labels(ids: range | list[int]) -> pd.DataFrame:
    return pd.DataFrame([_label_row(i) for i in ids])


NO_FEEDBACK = pd.DataFrame(columns=list(_feedback_row(0, 1, None)))


def test_label_and_feedback_columns_match_the_events() -> None:
    # The hand-built frames mirror what feedback/store.py writes: event fields + lineage.
    lineage = {"topic", "partition", "offset"}
    assert set(_label_row(0)) == set(TeacherLabel.model_fields) | lineage
    assert set(_feedback_row(0, 1, None)) == set(FeedbackEvent.model_fields) | lineage


def test_join_keeps_only_rows_of_this_tasks_labels() -> None:
    frame = pd.DataFrame(
        [
            _label_row(0),
            _label_row(1, ["positive", "negative"]),  # same names, other order
            _label_row(2, ["negative", "neutral", "positive"]),
            _label_row(3, ["negative"]),
            _label_row(4, np.array(NAMES, dtype=object)),  # how Parquet gives lists back
        ]
    )
    rows = join(frame, NO_FEEDBACK, TASK)
    assert rows["request_id"].tolist() == ["req-0", "req-4"]
    assert rows["correction"].tolist() == [-1, -1]
    assert rows["rating"].isna().all()


def test_join_maps_corrected_labels_to_indices() -> None:
    feedback = pd.DataFrame(
        [
            _feedback_row(0, 1, "negative"),
            _feedback_row(1, 2, "positive"),
            _feedback_row(2, 5, None),
            _feedback_row(3, 1, "neutral"),  # not a label of this task
            _feedback_row(99, 1, "negative"),  # feedback without a teacher label
        ]
    )
    rows = join(_labels(range(5)), feedback, TASK)
    assert rows["request_id"].tolist() == [f"req-{i}" for i in range(5)]
    assert rows["correction"].tolist() == [0, 1, -1, -1, -1]
    assert rows["rating"].tolist()[:4] == [1, 2, 5, 1]
    assert np.isnan(rows["rating"].iloc[4])


def test_feedback_after_the_join_window_is_left_out() -> None:
    labels = _labels(range(3))  # predicted at t = 0, 1, 2
    feedback = pd.DataFrame(
        [
            _feedback_row(0, 1, "negative", ts=0.0 + 30),  # 30 s after: on time
            _feedback_row(1, 1, "negative", ts=1.0 + 90),  # 90 s after: late
            _feedback_row(2, 2, "negative", ts=2.0 + 10),  # on time ...
            _feedback_row(2, 5, "positive", ts=2.0 + 500),  # ... then a late change of mind
        ]
    )
    rows = join(labels, feedback, TASK, window_s=60)
    assert rows["correction"].tolist() == [0, -1, 0]
    assert rows["rating"].tolist()[0] == 1 and np.isnan(rows["rating"].iloc[1])
    assert rows["rating"].iloc[2] == 2  # the latest feedback *within* the window
    wide = join(labels, feedback, TASK, window_s=1_000)
    assert wide["correction"].tolist() == [0, 0, 1]


def test_join_window_falls_back_to_label_time_for_old_rows() -> None:
    labels = _labels(range(2)).drop(columns=["predicted_at"])  # shards written before the field
    labels["ts"] = [100.0, 100.0]
    feedback = pd.DataFrame([_feedback_row(0, 1, "negative", ts=150.0)])
    assert join(labels, feedback, TASK, window_s=60)["correction"].tolist() == [0, -1]
    assert join(labels, feedback, TASK, window_s=10)["correction"].tolist() == [-1, -1]


def test_join_of_no_labels_is_empty_with_correction_column() -> None:
    rows = join(pd.DataFrame(), NO_FEEDBACK, TASK)
    assert rows.empty
    assert {"correction", "rating"} <= set(rows.columns)


def test_join_through_parquet_shards(tmp_path: Path) -> None:
    write_shard(tmp_path, "labels", [_label_row(i) for i in range(4)])
    write_shard(tmp_path, "labels", [_label_row(0, text="a replayed duplicate")])
    write_shard(tmp_path, "feedback", [_feedback_row(1, 5, None, ts=1.0)])
    write_shard(tmp_path, "feedback", [_feedback_row(1, 1, "negative", ts=2.0)])
    rows = join(read_labels(tmp_path), read_kind(tmp_path, "feedback"), TASK)
    assert rows["request_id"].tolist() == ["req-0", "req-1", "req-2", "req-3"]
    assert rows["text"].iloc[0] == "text number 0"  # first written wins
    assert rows["correction"].tolist() == [-1, 0, -1, -1]  # latest feedback wins
    assert rows["rating"].iloc[1] == 1


def test_in_holdout_is_stable_and_close_to_the_fraction() -> None:
    ids = [f"req-{i}" for i in range(5_000)]
    first = [in_holdout(rid, 0.2) for rid in ids]
    assert first == [in_holdout(rid, 0.2) for rid in ids]
    assert sum(first) / len(ids) == pytest.approx(0.2, abs=0.03)
    assert not any(in_holdout(rid, 0.0) for rid in ids[:100])
    # A larger fraction only adds ids: nothing moves from holdout back to train.
    assert all(in_holdout(rid, 0.5) for rid, held in zip(ids, first, strict=True) if held)


def _joined(n: int, corrections: dict[int, str] | None = None) -> pd.DataFrame:
    feedback = pd.DataFrame(
        [_feedback_row(i, 1, label) for i, label in (corrections or {}).items()]
    )
    return join(_labels(range(n)), feedback if len(feedback) else NO_FEEDBACK, TASK)


def _held(rows: pd.DataFrame, fraction: float) -> set[str]:
    """The request ids whose text ("text number i", already normalised) is held out."""
    pairs = zip(rows["request_id"], rows["text"], strict=True)
    return {rid for rid, text in pairs if in_holdout(text, fraction)}


def test_holdout_rows_never_train() -> None:
    rows = _joined(200)
    data = build_round(
        rows, since_ts=100.0, window_size=1_000, replay_ratio=9.0, holdout_fraction=0.3
    )
    held = _held(rows, 0.3)
    assert 30 < len(held) < 90
    assert not held & set(data.train["request_id"])
    assert set(data.holdout["request_id"]) == {r for r in held if int(r[4:]) > 100}
    assert len(data.train) + len(held) == 200  # a large replay ratio replays every older row


def test_retained_rows_are_older_held_out_texts_not_in_the_window_holdout() -> None:
    rows = _joined(200)
    repeat = rows[rows["request_id"].isin(_held(rows, 0.3))].iloc[:1].copy()
    first = str(repeat["request_id"].iloc[0])
    repeat["ts"], repeat["request_id"] = 150.5, "req-again"  # an older held-out text, sent again
    rows = pd.concat([rows, repeat], ignore_index=True)
    data = build_round(rows, 100.0, 1_000, 0.0, 0.3, retained_rows=1_000)
    held = _held(rows, 0.3)
    older_held = {r for r in held if r != "req-again" and int(r[4:]) <= 100}
    assert data.retained is not None
    assert int(first[4:]) <= 100 and first in older_held
    assert set(data.retained["request_id"]) == older_held - {first}
    assert "req-again" in set(data.holdout["request_id"])  # its text is the window's now
    assert not set(data.retained["request_id"]) & set(data.train["request_id"])
    few = build_round(rows, 100.0, 1_000, 0.0, 0.3, retained_rows=5, seed=1)
    assert few.retained is not None and len(few.retained) == 5
    assert set(few.retained["request_id"]) <= older_held
    off = build_round(rows, 100.0, 1_000, 0.0, 0.3)
    assert off.retained is not None and off.retained.empty  # 0 rows: not checked


def test_split_is_stable_across_row_order() -> None:
    rows = _joined(120)
    shuffled = rows.sample(frac=1.0, random_state=3)
    a = build_round(rows, 60.0, 1_000, 0.0, 0.25)
    b = build_round(shuffled, 60.0, 1_000, 0.0, 0.25)
    assert set(a.holdout["request_id"]) == set(b.holdout["request_id"])
    assert sorted(a.train["request_id"]) == sorted(b.train["request_id"])
    assert a.train["request_id"].tolist() == b.train["request_id"].tolist()  # sorted by ts


@pytest.mark.parametrize(("ratio", "window"), [(0.0, 1_000), (0.5, 1_000), (0.26, 1_000), (1.0, 5)])
def test_replay_count_is_ratio_times_recent(ratio: float, window: int) -> None:
    rows = _joined(200)
    data = build_round(
        rows, since_ts=99.0, window_size=window, replay_ratio=ratio, holdout_fraction=0.2
    )
    held = _held(rows, 0.2)
    recent_ids = [f"req-{i}" for i in range(100, 200) if f"req-{i}" not in held][-window:]
    older_ids = {f"req-{i}" for i in range(100) if f"req-{i}" not in held}
    n_replay = min(len(older_ids), round(ratio * len(recent_ids)))
    assert data.lineage.recent_rows == len(recent_ids)
    assert data.lineage.replay_rows == n_replay
    assert data.train["request_id"].tolist()[: len(recent_ids)] == recent_ids
    replayed = data.train["request_id"].tolist()[len(recent_ids) :]
    assert len(replayed) == n_replay
    assert set(replayed) <= older_ids
    assert len(set(replayed)) == n_replay
    assert data.lineage.rows == len(data.train) == len(recent_ids) + n_replay


def test_replay_is_capped_by_older_rows() -> None:
    rows = _joined(60)
    data = build_round(
        rows, since_ts=49.0, window_size=1_000, replay_ratio=10.0, holdout_fraction=0.2
    )
    older = {f"req-{i}" for i in range(50)} - _held(rows, 0.2)
    assert data.lineage.replay_rows == len(older)
    assert set(data.train["request_id"]) >= older


def test_replay_sample_depends_on_seed_only() -> None:
    rows = _joined(200)
    pick = [
        build_round(rows, 150.0, 1_000, 0.5, 0.2, seed=s).train["request_id"].tolist()
        for s in (1, 1, 2)
    ]
    assert pick[0] == pick[1]
    assert pick[0] != pick[2]


def test_window_size_keeps_the_newest_recent_rows() -> None:
    rows = _joined(50).sample(frac=1.0, random_state=0)  # arrival order is not time order
    data = build_round(rows, since_ts=-1.0, window_size=4, replay_ratio=0.0, holdout_fraction=0.2)
    not_held = [i for i in range(50) if not in_holdout(f"text number {i}", 0.2)]
    assert data.train["request_id"].tolist() == [f"req-{i}" for i in not_held[-4:]]
    assert data.train["ts"].is_monotonic_increasing


def test_kd_weight_follows_teacher_kd_weight_not_the_chance_corrected_weight() -> None:
    rows = _joined(60)
    rows["teacher_weight"] = np.where(np.arange(60) % 2, 0.2, 0.9)  # the gate's, not KD's
    rows["teacher_kd_weight"] = np.where(np.arange(60) % 3 == 0, 0.0, 1.0)
    data = build_round(rows, -1.0, 1_000, 0.0, 0.2)
    train = data.train.set_index("request_id")
    for rid, row in train.iterrows():
        assert row["kd_weight"] == (0.0 if int(str(rid)[4:]) % 3 == 0 else 1.0), rid
    assert data.lineage.teacher_weight == pytest.approx(train["teacher_weight"].mean())


def test_corrected_rows_get_kd_weight_zero_and_golden_holds_held_corrections() -> None:
    corrections = {i: ("negative" if i % 2 else "positive") for i in range(0, 80, 3)}
    rows = _joined(80, corrections)
    data = build_round(
        rows, since_ts=-1.0, window_size=1_000, replay_ratio=0.0, holdout_fraction=0.3
    )
    train = data.train.set_index("request_id")
    for rid, row in train.iterrows():
        i = int(str(rid)[4:])
        assert row["kd_weight"] == (0.0 if i in corrections else 1.0), rid
        assert row["correction"] == (-1 if i not in corrections else 1 - i % 2), rid
    assert data.train["kd_weight"].dtype == np.float32
    held = _held(rows, 0.3)
    assert set(data.golden["request_id"]) == {f"req-{i}" for i in corrections} & held
    assert (data.golden["correction"] >= 0).all()
    assert data.lineage.correction_rows == sum(f"req-{i}" in set(train.index) for i in corrections)
    assert data.lineage.correction_rows > 0


def test_lineage_offsets_are_min_max_per_topic_partition() -> None:
    rows = _joined(40)
    rows.loc[rows.index[:5], "topic"] = "other.topic"
    data = build_round(
        rows, since_ts=-1.0, window_size=1_000, replay_ratio=0.0, holdout_fraction=0.2
    )
    expected: dict[str, dict[str, list[int]]] = {}
    for (topic, partition), group in data.train.groupby(["topic", "partition"]):
        expected.setdefault(str(topic), {})[str(partition)] = [
            int(group["offset"].min()),
            int(group["offset"].max()),
        ]
    assert data.lineage.offsets == expected
    assert set(expected) == {Topics.LABELS, "other.topic"}
    assert set(expected[Topics.LABELS]) == {"0", "1"}
    train_ids = [int(r[4:]) for r in data.train["request_id"]]
    labels_even = [1000 + i for i in train_ids if i >= 5 and i % 2 == 0]
    assert expected[Topics.LABELS]["0"] == [min(labels_even), max(labels_even)]


def test_offset_ranges_of_nothing_is_empty() -> None:
    assert offset_ranges(_labels([]).reindex(columns=["topic", "partition", "offset"])) == {}
    frame = pd.DataFrame({"topic": ["t", "t", "t"], "partition": [3, 3, 3], "offset": [9, 2, 5]})
    assert offset_ranges(frame) == {"t": {"3": [2, 9]}}


def test_window_end_and_holdout_fallback() -> None:
    rows = _joined(30)
    data = build_round(
        rows, since_ts=1_000.0, window_size=1_000, replay_ratio=1.0, holdout_fraction=0.3
    )
    assert data.lineage.window_end_ts == 29.0
    assert data.lineage.recent_rows == 0
    assert data.lineage.replay_rows == 0  # replay follows the recent count
    assert set(data.holdout["request_id"]) == _held(rows, 0.3)  # no recent held rows: all of them
    assert data.train.empty


def _rated(i: int, rating: int, corrected: str | None, served: str) -> dict[str, Any]:
    return {**_feedback_row(i, rating, corrected), "predicted_label": served}


def test_a_teacher_label_agreeing_with_a_bad_rated_answer_is_distrusted() -> None:
    labels = _labels(range(5))  # the teacher's top label is "negative" on every row
    feedback = pd.DataFrame(
        [
            _rated(0, 1, None, served="negative"),  # rated bad, teacher agrees: distrusted
            _rated(1, 1, None, served="positive"),  # rated bad, teacher disagreed: trusted
            _rated(2, 5, None, served="negative"),  # rated good: trusted
            _rated(3, 2, "positive", served="negative"),  # corrected: cross-entropy, no KD
        ]
    )
    rows = join(labels, feedback, TASK)  # req-4 has no feedback
    assert kd_weights(rows, bad_rating_max=2, bad_agreement_weight=0.0).tolist() == [0, 1, 1, 0, 1]
    assert kd_weights(rows, 2, 0.25).tolist() == [0.25, 1, 1, 0, 1]
    rows.loc[rows["request_id"] == "req-0", "rating"] = 3
    assert kd_weights(rows, 2, 0.0).tolist() == [1, 1, 1, 0, 1]  # 3 is not bad at max 2
    assert kd_weights(rows, 3, 0.0).tolist() == [0, 1, 1, 0, 1]


def test_rows_without_feedback_keep_full_kd_weight() -> None:
    rows = join(_labels(range(3)), NO_FEEDBACK, TASK)
    assert kd_weights(rows, 2, 0.0).tolist() == [1, 1, 1]


def test_build_round_distrusts_and_counts_in_the_lineage() -> None:
    labels = _labels(range(40))
    feedback = pd.DataFrame([_rated(i, 1, None, served="negative") for i in range(0, 40, 4)])
    rows = join(labels, feedback, TASK)
    data = build_round(
        rows, since_ts=-1.0, window_size=100, replay_ratio=0.0, holdout_fraction=0.1,
        bad_rating_max=2, bad_agreement_weight=0.0,
    )  # fmt: skip
    train = data.train
    rated = train["request_id"].isin(feedback["request_id"])
    assert rated.any() and (train.loc[rated, "kd_weight"] == 0).all()
    assert (train.loc[~rated, "kd_weight"] == 1).all()
    assert data.lineage.distrusted_rows == int(rated.sum())


def test_replay_comes_from_the_reservoir_once_it_took_the_older_rows() -> None:
    from training import replay

    rows = _joined(200)
    data = build_round(
        rows, 150.0, 1_000, 0.2, 0.2, reservoir=replay.empty(10), seed=3
    )  # 151 older rows offered, 10 kept
    assert data.reservoir is not None
    assert data.reservoir.horizon_ts == 150.0 and len(data.reservoir.rows) == 10
    held = _held(rows, 0.2)
    assert data.reservoir.seen == sum(1 for i in range(151) if f"req-{i}" not in held)
    replayed = set(data.train["request_id"]) - {f"req-{i}" for i in range(151, 200)}
    assert replayed and replayed <= set(data.reservoir.rows["request_id"])
    again = build_round(rows, 150.0, 1_000, 0.2, 0.2, reservoir=data.reservoir, seed=3)
    assert again.reservoir is not None and again.reservoir.seen == data.reservoir.seen


def test_old_teachers_labels_are_downweighted_and_counted_in_the_lineage() -> None:
    rows = _labels(range(40))
    rows.loc[rows.index >= 20, "teacher_id"] = "llm:qwen:bbbb"
    rows.loc[rows.index == 0, "teacher_id"] = None  # written before teachers were named
    rows = join(rows, NO_FEEDBACK, TASK)
    policy = OldLabels("llm:qwen:bbbb", "downweight", 0.3)
    data = build_round(rows, -1.0, 1_000, 0.0, 0.01, old_labels=policy)
    old = data.train["teacher_id"].fillna("unknown") != "llm:qwen:bbbb"
    np.testing.assert_allclose(data.train.loc[old, "kd_weight"], 0.3)
    assert old.sum() > 0
    assert set(data.train.loc[~old, "kd_weight"]) == {1.0}
    lineage = data.lineage
    assert lineage.teachers["llm:qwen:bbbb"] == int((~old).sum())
    assert lineage.teachers["unknown"] == int(data.train["teacher_id"].isna().sum())
    assert lineage.old_teacher_rows == int(old.sum()) and lineage.old_labels == "downweight"
    assert lineage.distrusted_rows == 0  # down-weighted for their teacher, not distrusted
    kept = build_round(rows, -1.0, 1_000, 0.0, 0.01, old_labels=OldLabels("llm:qwen:bbbb"))
    assert set(kept.train["kd_weight"]) == {1.0} and kept.lineage.old_labels == "keep"


def test_a_relabel_replaces_its_original_with_the_originals_id_and_times() -> None:
    rows = _labels(range(4))
    relabel = _label_row(2, teacher_id="llm:qwen:bbbb", ts=99.0, predicted_at=99.0)
    relabel["request_id"] = "relabel:req-2"
    orphan = _label_row(7, teacher_id="llm:qwen:bbbb")
    orphan["request_id"] = "relabel:req-unknown"  # its original is not in the store: dropped
    out = supersede_relabelled(pd.concat([rows, pd.DataFrame([relabel, orphan])]))
    assert sorted(out["request_id"]) == ["req-0", "req-1", "req-2", "req-3"]
    new = out[out["request_id"] == "req-2"].iloc[0]
    assert new["teacher_id"] == "llm:qwen:bbbb" and new["ts"] == 2.0 and new["predicted_at"] == 2.0
    assert supersede_relabelled(rows) is rows  # nothing relabelled: unchanged


def test_every_copy_of_a_text_is_on_one_side_and_held_out_once() -> None:
    """A text sent twice (its case and spacing aside) is held out or trained on, never both:
    split by request id, the copies landed on both sides and the gate scored the candidate on
    its own training data. The holdout and golden set keep each text's newest copy."""
    corrections = {i: "negative" for i in range(200)}
    rows = _joined(200, corrections)
    rows["text"] = [
        f"Text  number {i // 2}" if i % 2 else f"text number {i // 2}" for i in range(200)
    ]
    data = build_round(
        rows, since_ts=-1.0, window_size=1000, replay_ratio=0.0, holdout_fraction=0.3
    )
    key = lambda t: " ".join(t.split()).casefold()  # noqa: E731
    trained = {key(t) for t in data.train["text"]}
    held = {key(t) for t in data.holdout["text"]}
    assert 15 < len(held) < 45 and trained.isdisjoint(held)
    assert trained | held == {f"text number {i}" for i in range(100)}
    assert len(data.holdout) == len(held)  # one row per text ...
    assert (data.holdout["ts"].astype(int) % 2 == 1).all()  # ... its newest copy
    assert len(data.golden) == len(held) and trained.isdisjoint(key(t) for t in data.golden["text"])
    assert data.lineage.golden_rows == len(held)


def test_a_replayed_row_of_a_held_out_text_never_trains() -> None:
    """A reservoir kept under the old split (by request id) may hold a text that is now held
    out: replay leaves it out."""
    rows = _joined(120)
    older = rows[rows["ts"] <= 60.0]
    reservoir = Reservoir(capacity=1_000, seen=len(older), horizon_ts=60.0, rows=older)
    data = build_round(rows, 60.0, 1_000, 10.0, 0.25, reservoir=reservoir)
    held = {key for key in older["text"] if in_holdout(key, 0.25)}
    assert held and held.isdisjoint(data.train["text"])
    assert data.lineage.replay_rows == len(older) - len(held)
