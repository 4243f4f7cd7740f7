"""An ensemble teacher's members, each measured against people (feedback.ensemble_trust): the
label carries every member's own answer, through the store and back; the round mixes them again
by their measured reliability once each has enough human labels, and not before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillery import bus
from distillery.events import SampledPrediction
from distillery.settings import TrustSettings
from distillery.task import Label, Task
from feedback.ensemble_trust import answers, member_trust, remix
from feedback.examples import read_labels
from feedback.human_labels import apply
from feedback.store import to_row, write_shard
from feedback.trust_report import TrustParams
from models.ensemble import EnsembleTeacher
from models.teacher import TeacherBatch, TeacherHealth
from models.teacher_labels import to_labels

TASK = Task(
    name="t",
    labels=[Label(name="negative", prompt="bad"), Label(name="positive", prompt="good")],
)


class Fixed:
    """A teacher that says ``probs`` for every text, and cannot read the texts in ``blind``."""

    def __init__(self, name: str, probs: list[float], blind: frozenset[str] = frozenset()) -> None:
        self.name, self.probs, self.blind = name, probs, blind

    @property
    def teacher_id(self) -> str:
        return self.name

    @property
    def has_states(self) -> bool:
        return False

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        probs = np.tile(np.asarray(self.probs, dtype=np.float32), (len(texts), 1))  # (B, C)
        unread = {i: "?" for i, t in enumerate(texts) if t in self.blind}
        return TeacherBatch(probs, np.log(probs), unreadable=unread)

    def health(self) -> TeacherHealth:
        return TeacherHealth(teacher_id=self.name)


def test_a_label_carries_each_members_own_answer_through_the_store(tmp_path: Path) -> None:
    ensemble = EnsembleTeacher(
        [(Fixed("a", [0.9, 0.1]), 0.5), (Fixed("b", [0.2, 0.8], frozenset({"t1"})), 0.5)]
    )
    events = [
        SampledPrediction(
            request_id=f"r{i}", text=f"t{i}", student_probs=[0.5, 0.5], model_version=1
        )
        for i in range(2)
    ]
    batch = [(bus.Record(topic="s", partition=0, offset=i, value=b""), e)
             for i, e in enumerate(events)]  # fmt: skip
    got = to_labels(batch, TASK, ensemble).labels
    assert [[m.teacher_id for m in lab.members or []] for lab in got] == [["a", "b"], ["a"]]
    assert got[0].members is not None and np.allclose(got[0].members[1].probs, [0.2, 0.8])
    for lab in got:
        write_shard(tmp_path, "labels", [to_row(batch[0][0], lab)])
    write_shard(
        tmp_path, "labels", [{"request_id": "r9", "ts": 1.0, "text": "plain"}]
    )  # no members
    back = read_labels(tmp_path).set_index("request_id")["members"]
    assert [tid for tid, _ in answers(back["r0"])] == ["a", "b"]
    assert np.allclose(answers(back["r1"])[0][1], [0.9, 0.1]) and answers(back["r9"]) == []
    plain = to_labels(batch, TASK, Fixed("a", [0.9, 0.1])).labels
    assert plain[0].members is None


def _rows(n: int, truth: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Labels mixed half and half from ``good`` (right 90% of the time) and ``coin`` (a guess)."""
    good = np.where(rng.random(n) < 0.9, truth, 1 - truth)
    coin = rng.integers(0, 2, n)
    members = [
        [{"teacher_id": "good", "probs": [0.2, 0.8] if g else [0.8, 0.2]},
         {"teacher_id": "coin", "probs": [0.05, 0.95] if c else [0.95, 0.05]}]
        for g, c in zip(good, coin, strict=True)
    ]  # fmt: skip
    even = [[0.5, 0.5]] * n  # what a fixed half-and-half mix would not settle
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)], "ts": [float(i) for i in range(n)],
            "text": [f"a short text {i}" for i in range(n)],
            "labels": [["negative", "positive"]] * n,
            "teacher_logits": even, "teacher_probs": even, "members": members,
        }
    )  # fmt: skip


def _human(truth: np.ndarray, rated: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item": [f"a short text {i}" for i in range(rated)],
            "human_label": truth[:rated],
            "human_weight": 1.0,
        }
    )


def test_members_are_measured_against_people_and_mixed_by_it_once_each_has_enough() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    rows = _rows(400, truth, rng)
    params = TrustParams(n_labels=2)
    few = member_trust(rows, _human(truth, 20), params, min_labels=50)
    assert [m.source for m in few] == ["coin", "good"] and all(m.share is None for m in few)
    assert remix(rows, few) is rows  # the task file's mix stands
    measured = member_trust(rows, _human(truth, 200), params, min_labels=50)
    shares = {m.source: m.share for m in measured}
    assert shares["good"] is not None and shares["coin"] is not None
    assert shares["good"] > 0.85 > 0.15 > shares["coin"]  # type: ignore[operator]
    mixed = remix(rows, measured)
    top = np.array(list(mixed["teacher_probs"])).argmax(1)
    follows_good = top == np.array([a[0]["probs"][1] > 0.5 for a in rows["members"]])
    assert follows_good.all()
    assert ((top == truth).mean()) > 0.85  # the coin no longer drowns the good member out


def test_a_round_remixes_an_ensembles_labels_by_people_and_records_the_shares() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 300)
    labels = _rows(300, truth, rng)
    names = ["negative", "positive"]
    feedback = pd.DataFrame(
        [{"request_id": f"r{i}", "ts": float(i) + 1, "rating": 1, "corrected_label": names[y],
          "predicted_label": "positive", "model_version": 1, "key_id": None}
         for i, y in enumerate(truth[:120])]
    )  # fmt: skip
    out = apply(labels, feedback, TASK, TrustSettings(), 3600.0)
    assert out.trust is not None
    assert {m.source for m in out.trust.members if m.share} == {"good", "coin"}
    shares = {m.source: m.share or 0.0 for m in out.trust.members}
    assert shares["good"] > 3 * shares["coin"]  # measured on 120 labels: 0.78 against 0.22
    assert out.trust.teacher.reliability > 0.85  # the teacher is measured on the new mix
    unrated = out.rows[out.rows["correction"] < 0]
    top = np.array(list(unrated["teacher_probs"])).argmax(1)
    assert (top == truth[unrated.index]).mean() > 0.85
    held = apply(labels, feedback, TASK, TrustSettings(ensemble_min_labels=500), 3600.0)
    assert held.trust is not None and all(m.share is None for m in held.trust.members)
    assert np.allclose(np.array(list(held.rows["teacher_probs"])), 0.5)


def test_reweigh_mixes_by_measured_shares_keeps_the_id_and_falls_back_per_text() -> None:
    a, b = Fixed("a", [0.9, 0.1]), Fixed("b", [0.2, 0.8], frozenset({"t1"}))
    ensemble = EnsembleTeacher([(a, 0.5), (b, 0.5)])
    before = ensemble.teacher_id
    assert ensemble.reweigh({"a": 0.0, "b": 1.0}) == {"a": 0.0, "b": 1.0}
    assert ensemble.teacher_id == before  # a re-mix is not a new teacher
    got = ensemble.label(["t0", "t1"])
    np.testing.assert_allclose(got.probs[0], [0.2, 0.8], atol=1e-6)  # b alone, by its share
    # t1: b cannot read it and a's share is 0, so the configured mix (a alone here) answers it
    np.testing.assert_allclose(got.probs[1], [0.9, 0.1], atol=1e-6)
    assert got.unreadable == {}
    # shares naming no member, or all 0, restore the task file's weights
    assert ensemble.reweigh({"c": 1.0}) == {"a": 0.5, "b": 0.5}
    assert ensemble.reweigh({"a": 0.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}
    half = ensemble.label(["t0"]).probs[0]
    expected = np.exp(0.5 * np.log([0.9, 0.1]) + 0.5 * np.log([0.2, 0.8]))
    np.testing.assert_allclose(half, expected / expected.sum(), atol=1e-6)
