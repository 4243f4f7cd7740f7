"""feedback.human_labels: confirmations, one vote per key, and trust on the round's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from distillery.settings import TrustSettings
from distillery.task import Label, Task
from feedback.human_labels import apply, votes

TASK = Task(
    name="t",
    labels=[Label(name="negative", prompt="bad"), Label(name="positive", prompt="good")],
)


def _labels(n: int, teacher_top: int = 1) -> pd.DataFrame:
    probs = [0.1, 0.9] if teacher_top == 1 else [0.9, 0.1]
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "ts": [float(i) for i in range(n)],
            "text": [f"a short text {i}" for i in range(n)],
            "labels": [["negative", "positive"]] * n,
            "teacher_logits": [[0.0, 1.0]] * n,
            "teacher_probs": [probs] * n,
        }
    )


def _fb(rid: str, rating: int, corrected: str | None, key: str | None, ts: float = 1.0) -> dict:
    return {
        "request_id": rid, "ts": ts, "rating": rating, "corrected_label": corrected,
        "predicted_label": "positive", "model_version": 1, "key_id": key,
    }  # fmt: skip


def test_votes_take_corrections_and_confirmations_one_per_key() -> None:
    feedback = pd.DataFrame(
        [
            _fb("r0", 5, None, "k1"),  # confirms "positive"
            _fb("r1", 1, "negative", "k1"),  # corrects
            _fb("r2", 3, None, "k1"),  # neither
            _fb("r3", 1, "negative", "k1", ts=1.0),
            _fb("r3", 5, None, "k1", ts=2.0),  # the same key changed its mind: latest wins
            _fb("r3", 1, "negative", None, ts=1.5),  # open mode, another voice
        ]
    )
    found = votes(_labels(4), feedback, TASK, 3600.0, TrustSettings())
    got = {(r.request_id, r.key_id): r.label for r in found.itertuples()}
    assert got == {("r0", "k1"): 1, ("r1", "k1"): 0, ("r3", "k1"): 1, ("r3", "open"): 0}
    off = votes(_labels(4), feedback, TASK, 3600.0, TrustSettings(confirmations=False))
    assert set(off["label"]) == {0} and len(off) == 2  # r3: k1's latest is a bare 5


def test_votes_outside_the_join_window_are_left_out() -> None:
    feedback = pd.DataFrame([_fb("r0", 1, "negative", "k1", ts=5000.0)])
    assert votes(_labels(1), feedback, TASK, 3600.0, TrustSettings()).empty


def test_apply_keeps_an_adversary_out_of_the_golden_set_and_training() -> None:
    n = 400
    rows = []
    truth = np.arange(n) % 2
    for i in range(n):
        name = ["negative", "positive"][truth[i]]
        lie = ["positive", "negative"][truth[i]]
        rows.append(_fb(f"r{i}", 1, name, f"honest-{i % 3}"))
        if i % 2 == 0:
            rows.append(_fb(f"r{i}", 1, lie, "adversary"))
    labels = _labels(n)
    labels["teacher_probs"] = [[0.05, 0.95] if y else [0.95, 0.05] for y in truth]
    out = apply(labels, pd.DataFrame(rows), TASK, TrustSettings(), 3600.0)
    assert out.trust is not None
    assert out.trust.key("adversary").weight == 0.0  # type: ignore[union-attr]
    assert (out.rows["correction"].to_numpy() == truth).all()
    assert (out.rows["golden_label"].to_numpy() == truth).all()
    assert (out.rows["teacher_weight"] > 0.8).all()
    assert (out.rows["teacher_kd_weight"] == 1.0).all()
    off = apply(labels, pd.DataFrame(rows), TASK, TrustSettings(mode="off"), 3600.0)
    assert off.trust is None
    assert (off.rows.loc[truth == 0, "correction"] == -1).all()  # ties with the liar
    assert (off.rows["teacher_weight"] == 1.0).all()
    assert (off.rows["teacher_kd_weight"] == 1.0).all()


def test_apply_with_a_trusted_open_key_silences_a_wrong_teacher() -> None:
    n = 200
    labels = _labels(n, teacher_top=1)  # always "positive"
    feedback = pd.DataFrame([_fb(f"r{i}", 1, "negative", None) for i in range(0, n, 4)])
    out = apply(labels, feedback, TASK, TrustSettings(), 3600.0)
    assert (out.rows["teacher_weight"] == 0.0).all()
    assert (out.rows["teacher_kd_weight"] == 0.0).all()  # 50 labels show it wrong
    assert (out.rows["ce_weight"][out.rows["correction"] >= 0] == 1.0).all()
    untrusted = apply(labels, feedback, TASK, TrustSettings(open_trusted=False), 3600.0)
    assert (untrusted.rows["golden_label"] == -1).all()  # one unproven key: no golden labels


def test_keys_are_compared_on_the_same_text_across_their_own_requests() -> None:
    """A token binds its key, so two keys never rate one request: they meet on texts."""
    n = 300
    labels = _labels(2 * n)
    labels["text"] = [f"text {i // 2}" for i in range(2 * n)]  # r2i and r2i+1 share a text
    truth = [(i // 2) % 2 for i in range(2 * n)]
    labels["teacher_probs"] = [[0.5, 0.5]] * (2 * n)  # an unsure teacher: no reference at all
    names = ["negative", "positive"]
    rows = [_fb(f"r{i}", 1, names[truth[i]], "ops") for i in range(0, 2 * n, 2)]
    rows += [_fb(f"r{i}", 1, names[1 - truth[i]], "liar") for i in range(1, 2 * n, 2)]
    settings = TrustSettings(trusted_keys="ops", open_trusted=False)
    out = apply(labels, pd.DataFrame(rows), TASK, settings, 3600.0)
    assert out.trust is not None
    liar = out.trust.key("liar")
    assert liar is not None and liar.weight == 0.0 and liar.comparisons == n
    assert (out.rows["correction"].to_numpy() == np.array(truth)).all()  # both requests
