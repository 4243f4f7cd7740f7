"""A generate task's round data and gate (``training.generate_cycle``), on a store written here."""

from __future__ import annotations

import json
from pathlib import Path

from distillery.contracts import GateCheck, GateReport, ReplyMeasures
from distillery.events import ChatTurn, FeedbackEvent, TeacherLabel
from distillery.settings import (
    GateSettings,
    PathSettings,
    RolloutSettings,
    Settings,
    TrainSettings,
)
from distillery.task import load_task
from feedback.store import write_shard
from training.cycle import settle
from training.data import in_holdout
from training.generate_cycle import decide, examples
from training.registry import Lineage, Registry, VersionMeta

ROOT = Path(__file__).resolve().parents[2]
TASK = load_task(ROOT / "tasks" / "reply.yaml")


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        paths=PathSettings(state_dir=tmp_path, task_file=ROOT / "tasks" / "reply.yaml"),
        train=TrainSettings(holdout_fraction=0.3, correction_weight=3.0),
        gate=GateSettings(agreement_margin=0.05, min_golden_rows=1),
    )


def _label(i: int) -> dict[str, object]:
    chat = [ChatTurn(role="system", content="Be kind."), ChatTurn(role="user", content=f"msg {i}")]
    event = TeacherLabel(
        request_id=f"r{i}", text=f"msg {i}", labels=[], teacher_logits=[], teacher_probs=[],
        student_probs=[], model_version=1, source_partition=0, source_offset=i, ts=float(i),
        teacher_id="llm-gen:m:1", reply=f"teacher {i}", student_reply=f"student {i}", messages=chat,
    )  # fmt: skip
    return {**event.model_dump(), "topic": "t", "partition": 0, "offset": i}


def test_corrections_replace_the_teachers_reply_and_weigh_more(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_shard(settings.paths.store_dir, "labels", [_label(i) for i in range(40)])
    fixed = next(i for i in range(40) if not in_holdout(f"msg {i}", 0.3))
    held = next(i for i in range(40) if in_holdout(f"msg {i}", 0.3))
    fixes = [
        FeedbackEvent(request_id=f"r{i}", rating=1, predicted_label="reply", model_version=1,
                      corrected_reply=f"human {i}").model_dump()
        for i in (fixed, held)
    ]  # fmt: skip
    write_shard(settings.paths.store_dir, "feedback", fixes)
    data = examples(settings, TASK, parent=1)
    assert len(data.train) + len(data.holdout) == 40 and 5 <= len(data.holdout) <= 20
    by_target = dict(zip(data.train["target"], data.train["weight"], strict=True))
    assert by_target[f"human {fixed}"] == 3.0 and f"teacher {fixed}" not in by_target
    assert by_target[f"teacher {next(i for i in range(40) if i not in (fixed, held))}"] in (1.0,)
    assert data.golden["corrected_reply"].tolist() == [f"human {held}"]
    chat = json.loads(data.train["messages"].iloc[0])
    assert [t["role"] for t in chat] == ["system", "user"] and chat[0]["content"] == "Be kind."
    assert data.lineage.correction_rows == 1 and data.lineage.teachers == {
        "llm-gen:m:1": len(data.train)}  # fmt: skip


def _m(chrf: float, golden: float | None = None) -> ReplyMeasures:
    return ReplyMeasures(chrf, -1.0, 20.0, golden, 10, 0 if golden is None else 2)


def test_the_gate_holds_chrf_within_the_margin(tmp_path: Path) -> None:
    settings = _settings(tmp_path)  # margin 0.05 → 5 chrF points
    within = decide(_m(40.0), _m(44.0), settings)
    assert within.passed and [c.name for c in within.checks] == ["chrf"]
    assert within.candidate == _m(40.0) and within.current == _m(44.0)
    below = decide(_m(38.0), _m(44.0), settings)
    assert not below.passed and below.reason == "held-out chrF 38.0 < current 44.0 - 5"
    assert below.failed() == ["chrf"] and below.checks[0].threshold == 39.0
    golden = decide(_m(50.0, 20.0), _m(44.0, 30.0), settings)
    assert not golden.passed and golden.reason.startswith("golden chrF 20.0 < current 30.0")
    assert golden.failed() == ["golden_chrf"]


def test_a_few_replies_still_give_the_gate_one_held_out_chat(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    kept = [i for i in range(200) if not in_holdout(f"msg {i}", 0.3)][:3]  # none would be held out
    write_shard(settings.paths.store_dir, "labels", [_label(i) for i in kept])
    data = examples(settings, TASK, parent=1)
    assert len(data.train) == 2 and data.holdout["request_id"].tolist() == [f"r{kept[-1]}"]


def test_status_names_a_generate_tasks_teacher_by_its_reply_prompt() -> None:
    from distillery.settings import TeacherSettings
    from models.factory import configured_teacher_id
    from models.responder import responder_id

    assert TASK.generate is not None
    local = TeacherSettings(kind="llm")  # the local server: its model name is pinned
    assert configured_teacher_id(local, TASK) == responder_id(
        "qwen2.5-coder-0.5b-instruct-q4", TASK.generate
    )
    remote = TeacherSettings(kind="llm", url="http://teacher:8000")  # only it knows its model
    assert configured_teacher_id(remote, TASK) is None


def test_a_passing_candidate_starts_a_shadow_when_serving_else_is_promoted(
    tmp_path: Path,
) -> None:
    """A generate rollout starts in shadow, as a classifier's does; with no Serve, or rollout
    off, it is promoted; failing, rejected with its report."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    registry = Registry(tmp_path / "registry")
    meta = VersionMeta(version=0, lineage=Lineage(rows=1))
    for _ in range(4):
        registry.register(model, meta)
    registry.promote(1, "base")
    passed = GateReport(passed=True, checks=[GateCheck("chrf", 40.0, 38.0, 33.0, True)],
                        reason="all checks passed")  # fmt: skip
    failed = GateReport(passed=False, checks=[GateCheck("chrf", 20.0, 38.0, 33.0, False)],
                        reason="chrf 20.000 < 33.000 (current 38.000)")  # fmt: skip
    settings = _settings(tmp_path)
    assert settle(settings, registry, 2, failed, "r", True) == "rejected"
    assert registry.get(2).status == "rejected" and registry.rollout() is None
    assert settle(settings, registry, 3, passed, "r", True) == "shadow"
    running = registry.rollout()
    assert running is not None and (running.candidate, running.stage) == (3, "shadow")
    assert registry.get(3).gate == passed and registry.current() == 1
    registry.roll_back("test: the next case")
    off = settings.model_copy(update={"rollout": RolloutSettings(enabled=False)})
    assert settle(off, registry, 4, passed, "r", True) == "promoted"
    assert registry.current() == 4 and registry.rollout() is None


def test_rated_bad_replies_become_preference_pairs_against_the_fix_or_the_teacher(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    write_shard(settings.paths.store_dir, "labels", [_label(i) for i in range(40)])
    train = [i for i in range(40) if not in_holdout(f"msg {i}", 0.3)]
    fixed, bad, good, late_good = train[:4]
    held = next(i for i in range(40) if in_holdout(f"msg {i}", 0.3))

    def rated(i: int, rating: int, ts: float, fix: str | None = None) -> dict[str, object]:
        event = FeedbackEvent(request_id=f"r{i}", rating=rating, predicted_label="reply",
                              model_version=1, corrected_reply=fix)  # fmt: skip
        return {**event.model_dump(), "ts": ts}

    feedback = [
        rated(fixed, 1, 100.0, f"human {fixed}"), rated(bad, 2, 100.0), rated(good, 4, 100.0),
        rated(late_good, 1, 100.0), rated(late_good, 5, 200.0), rated(held, 1, 100.0),
    ]  # fmt: skip
    write_shard(settings.paths.store_dir, "feedback", feedback)
    data = examples(settings, TASK, parent=1)
    pairs = {r.rejected: r.chosen for r in data.pairs.itertuples()}
    # the correction is chosen where there is one, else the teacher's reply; a later good
    # rating replaces a bad one; rows held out for the gate make no pairs
    assert pairs == {f"student {fixed}": f"human {fixed}", f"student {bad}": f"teacher {bad}"}
    assert data.lineage.preference_pairs == 2
    chat = json.loads(data.pairs["messages"].iloc[0])
    assert chat[-1]["content"] in (f"msg {fixed}", f"msg {bad}")
