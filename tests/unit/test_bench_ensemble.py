"""bench.ensemble's arithmetic: members measured on k human labels, mixed by their shares."""

from __future__ import annotations

import numpy as np

from bench import ensemble as be
from bench.offline_students import Rows
from distillery.task import Label, Task
from models.teacher import MemberProbs

TASK = Task(
    name="t",
    labels=[Label(name=n, prompt=n) for n in ("a", "b", "c", "d")],
)


def _members(truth: np.ndarray, rng: np.random.Generator) -> list[MemberProbs]:
    """A member right 90% of the time, and one that always says label 0 (at chance)."""
    n = len(truth)
    good = np.where(rng.random(n) < 0.9, truth, (truth + 1) % 4)
    probs_good = np.full((n, 4), 0.1)
    probs_good[np.arange(n), good] = 0.7
    probs_first = np.tile([0.97, 0.01, 0.01, 0.01], (n, 1))  # sure of label 0, always
    ok = np.ones(n, dtype=bool)
    return [MemberProbs("first", probs_first, ok), MemberProbs("good", probs_good, ok)]


def test_measured_shares_let_the_good_member_win_where_a_fixed_mix_does_not() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    rows = Rows([f"text {i}" for i in range(400)], list(truth), ["movies"] * 400)
    members = _members(truth, rng)
    fixed = be.mixed_accuracy(members, [0.5, 0.5], rows)
    shares = be.measured_shares(members, rows, list(range(400)), 100, TASK)
    assert shares[1] > 0.9 and abs(sum(shares) - 1) < 1e-3
    measured = be.mixed_accuracy(members, shares, rows)
    good_alone = be.mixed_accuracy(members[1:], [1.0], rows)
    assert fixed < 0.5 < measured and abs(measured - good_alone) < 0.02
    few = be.measured_shares(members, rows, list(range(400)), 10, TASK)
    assert few[1] > few[0]  # ten labels already lean the right way, the prior holds it back


def test_the_table_shows_each_budget_with_the_llm_share() -> None:
    task = {
        "task": "source", "members": {"llm": 0.258, "minilm": 0.688},
        "fixed": {"weights": [0.5, 0.5], "accuracy": 0.48},
        "measured": [{"human_labels": 50, "accuracy": 0.66, "min": 0.6, "max": 0.7,
                      "llm_share": 0.21}],
    }  # fmt: skip
    text = be.table({"tasks": [task], "settings": {"draws": 5}})
    assert "| source | 0.258 | 0.688 | 0.48 (0.5, 0.5) | — | — | 0.66 (0.21) |" in text
