"""Label-free quality per version, drift report retention, and the dashboard payload."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from distillery.contracts import GateReport, TriggerRecord
from distillery.task import Task
from feedback.examples import recent
from monitoring.dashboard import Dashboard, SeriesPoint, WatchView, assemble, round_row
from monitoring.quality import VersionQuality, feedback_summary, per_version
from monitoring.reports import Reports
from monitoring.status import CascadeView, Status, TeacherView, TriggerView
from monitoring.triggers import Signals
from training.registry import Registry, VersionMeta

POS, NEG = [0.1, 0.9], [0.9, 0.1]


def _labels() -> pd.DataFrame:
    rows = [
        # v1: 4 labels, the teacher disagrees on 1; v2: 2 labels, disagrees on both
        ("a", 1, POS, POS), ("b", 1, POS, POS), ("c", 1, NEG, NEG), ("d", 1, POS, NEG),
        ("e", 2, POS, NEG), ("f", 2, NEG, POS),
    ]  # fmt: skip
    return pd.DataFrame(
        [
            {"request_id": r, "model_version": v, "student_probs": s, "teacher_probs": t,
             "ts": 100.0 + i, "predicted_at": 90.0 + i}
            for i, (r, v, s, t) in enumerate(rows)
        ]
    )  # fmt: skip


def _feedback() -> pd.DataFrame:
    rows = [("a", 1, 5, 1.0), ("a", 1, 1, 2.0), ("b", 1, 4, 3.0), ("e", 2, 2, 4.0)]
    return pd.DataFrame(
        [{"request_id": r, "model_version": v, "rating": g, "ts": t} for r, v, g, t in rows]
    )


def test_per_version_disagreement_and_latest_rating() -> None:
    by = {q.version: q for q in per_version(_labels(), _feedback(), bad_rating_max=2)}
    assert (by[1].labelled, by[1].disagreement) == (4, pytest.approx(0.25))
    assert (by[2].labelled, by[2].disagreement) == (2, pytest.approx(1.0))
    # request a was rated 5 then 1: only the latest (1) counts
    assert (by[1].rated, by[1].mean_rating, by[1].negative_share) == (2, 2.5, 0.5)
    assert (by[2].rated, by[2].negative_share) == (1, 1.0)


def test_versions_with_only_feedback_or_nothing() -> None:
    only = per_version(pd.DataFrame(), _feedback(), 2)
    assert [q.version for q in only] == [1, 2] and only[0].disagreement is None
    assert per_version(pd.DataFrame(), pd.DataFrame(), 2) == []


def test_recent_uses_prediction_time_and_falls_back_to_ts() -> None:
    labels = _labels()
    assert list(recent(labels, 94.0, "predicted_at")["request_id"]) == ["e", "f"]
    labels.loc[4, "predicted_at"] = None  # e falls back to ts 104
    assert list(recent(labels, 95.0, "predicted_at")["request_id"]) == ["e", "f"]


def test_feedback_summary_rate_mean_and_negative_share() -> None:
    summary = feedback_summary(_feedback(), since=0.0, now=120.0, bad_rating_max=2)
    assert summary.rated == 3 and summary.feedback_per_min == pytest.approx(1.5)
    assert summary.mean_rating == pytest.approx(7 / 3)
    assert summary.negative_share == pytest.approx(2 / 3)
    empty = feedback_summary(_feedback(), since=10.0, now=70.0, bad_rating_max=2)
    assert (empty.rated, empty.mean_rating, empty.negative_share) == (0, None, None)


def test_reports_keep_the_newest_and_refuse_other_names(tmp_path: Path) -> None:
    reports = Reports(tmp_path, keep=2)
    for i in range(3):
        path = reports.next_path(now=1_800_000_000 + i)
        path.write_text(f"<html>{i}</html>")
        reports.add(path, {"features": i / 10})
    listed = reports.listing()
    assert [r.name for r in listed] == [
        "drift-20270115T080002Z.html",
        "drift-20270115T080001Z.html",
    ]
    assert listed[0].url == "/v1/reports/drift-20270115T080002Z.html"
    assert listed[0].drift_share == {"features": 0.2}
    assert len(list(tmp_path.iterdir())) == 4  # two reports, two summaries
    assert reports.read(listed[1].name) == b"<html>1</html>"
    for bad in ("drift-20270115T080000Z.html", "../x.html", "meta.json"):
        with pytest.raises(KeyError, match="no drift report named"):
            reports.read(bad)
    with pytest.raises(ValueError, match="keep=0"):
        Reports(tmp_path, keep=0)


def test_same_second_reports_get_distinct_names(tmp_path: Path) -> None:
    reports = Reports(tmp_path, keep=5)
    first = reports.next_path(now=0)
    first.write_text("x")
    assert reports.next_path(now=0).name == "drift-19700101T000000Z-1.html"


def test_dashboard_lists_rounds_newest_first_with_trigger_and_gate(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_text("w")
    trigger = TriggerRecord(kind="drift", value=0.6, reason="drift share 0.60 ≥ 0.50")
    registry.register(model, VersionMeta(version=0, trigger=TriggerRecord.bootstrap("seed")))
    registry.promote(1, "bootstrap")
    v2 = registry.register(model, VersionMeta(version=0, trigger=trigger))
    registry.reject(v2.version, "gate: agreement", GateReport(passed=False))
    task = Task.model_validate(
        {"name": "sentiment", "labels": [{"name": "negative", "prompt": "bad"},
                                         {"name": "positive", "prompt": "good"}]}
    )  # fmt: skip
    teacher = TeacherView(
        kind="embedding", teacher_id="embedding:minilm:1", state="up", last_error=None,
        serving_version_learnt_from={}, changed=False, note=None, old_labels="keep",
    )  # fmt: skip
    status = Status(
        current_version=1, versions=[1, 2], rollout=None, rollout_verdict=None,
        round_running=False, round_progress=None, last_round=None, last_error=None,
        labels_since_last_round=7, minutes_since_last_round=2.0, drift=None,
        signals=Signals(new_labels=7, minutes_since_round=2.0, drift=0.1),
        trigger=TriggerView(fire=False, kind=None, value=None, reason="no trigger",
                            cooldown_until=None, disarmed=[]),
        replicas={}, teacher=teacher, trust=None,
        cascade=CascadeView(min_confidence=0.0, offered=None, version=1),
    )  # fmt: skip
    quality = VersionQuality(version=1, labelled=40, disagreement=0.2, rated=3,
                             mean_rating=4.0, negative_share=0.0)  # fmt: skip
    watch = WatchView(series=[SeriesPoint(ts=1.0)], versions=[quality], reports=[], drift=None)
    data = assemble(status, watch, registry, task)
    assert [r.version for r in data.rounds] == [2, 1]
    assert data.rounds[0].trigger == "drift" and data.rounds[0].outcome == "rejected"
    assert data.rounds[0].trigger_value == 0.6 and data.rounds[0].gate == GateReport(passed=False)
    assert data.rounds[1].outcome == "promoted"
    assert (data.versions[1].version, data.versions[1].status) == (1, "promoted")
    assert (data.versions[1].disagreement, data.versions[1].rated) == (0.2, 3)
    assert data.versions[0].disagreement is None  # v2 answered nothing in the window
    assert data.trigger is not None and data.trigger.reason == "no trigger"
    assert (data.trigger.values.labels, data.trigger.values.drift) == (7, 0.1)
    assert data.events[0].event == "rejected" and data.events[0].version == 2
    assert data.labels == ["negative", "positive"] and data.series == [SeriesPoint(ts=1.0)]
    assert round_row(VersionMeta(version=9)).trigger is None
    sent = data.model_dump_json()  # what GET /v1/dashboard answers, read back the same
    assert Dashboard.model_validate_json(sent) == data
