"""bench.people's pure parts: who rates what, and the table from a results payload."""

from __future__ import annotations

import numpy as np

from bench.people import ADVERSARY, arms, feedback_for
from bench.people_report import paired_gaps, render, summary_rows

NAMES = ["negative", "positive"]


class Always:
    """An rng whose draws are all ``value`` (so every rater rates)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value

    def integers(self, n: int) -> int:
        return 0


def test_honest_raters_confirm_or_correct_and_the_adversary_flips() -> None:
    by_name = {(a.scenario, a.name): a for a in arms()}
    users = by_name[("swapped", "after")]
    assert feedback_for(users, "positive", "positive", NAMES, Always(0.0)) == [("open", 5, None)]
    assert feedback_for(users, "positive", "negative", NAMES, Always(0.0)) == [
        ("open", 1, "positive")
    ]
    keyed = by_name[("adversary", "trust on")]
    got = feedback_for(keyed, "positive", "positive", NAMES, Always(0.0))
    assert got == [("honest-1", 5, None), (ADVERSARY, 1, "negative")]
    wrong = feedback_for(keyed, "positive", "negative", NAMES, Always(0.0))
    assert wrong[-1] == (ADVERSARY, 5, None)  # confirms the wrong answer
    assert feedback_for(keyed, "positive", "positive", NAMES, Always(0.99)) == []


def _run(scenario: str, arm: str, seed: int, accuracies: list[float], weight: float | None) -> dict:
    points = [{"round": 0, "ratings": 0, "labels": 0, "accuracy": accuracies[0]}]
    for i, acc in enumerate(accuracies[1:], start=1):
        point = {
            "round": i, "ratings": 200 * i, "accuracy": acc, "passed": i != 2,
            "referee": "human" if i > 1 else "teacher", "failed": ["agreement"] if i == 2 else [],
            "teacher_gap": 0.1,
        }  # fmt: skip
        if weight is not None:
            point["weights"] = {"adversary": weight}
        points.append(point)
    return {
        "scenario": scenario, "arm": arm, "seed": seed, "teacher": "normal",
        "teacher_accuracy": 0.5, "points": points,
    }  # fmt: skip


def test_summary_means_over_seeds_and_counts_rejections_and_referees() -> None:
    payload = {
        "command": "python -m bench.people", "seconds": 1.0,
        "args": {"eval_size": 10, "steps": 3, "per_step": 5, "teacher_share": 0.3, "seeds": 2},
        "runs": [
            _run("adversary", "no adversary", 0, [0.5, 0.6, 0.7, 0.8], None),
            _run("adversary", "no adversary", 1, [0.5, 0.6, 0.7, 0.6], None),
            _run("adversary", "trust on", 0, [0.5, 0.6, 0.7, 0.79], 0.0),
            _run("adversary", "trust on", 1, [0.5, 0.6, 0.7, 0.61], 0.01),
        ],
    }  # fmt: skip
    rows = {r["arm"]: r for r in summary_rows(payload)}
    on = rows["trust on"]
    assert on["seeds"] == 2 and np.isclose(on["final"], 0.70)
    assert on["early"] == 0.7  # the last round within 500 ratings: round 2 (400 ratings)
    assert (on["promoted"], on["rounds"], on["teacher_rejections"], on["human_referee"]) == (
        4, 6, 2, 4,
    )  # fmt: skip
    assert on["adversary_weight"] == 0.01  # the largest over the seeds
    assert np.allclose(paired_gaps(payload, "adversary", "trust on", "no adversary"), [-1, 1])
    table = render(payload)
    assert (
        "| adversary | trust on | 0.500 | 0.500 | 0.700 (0.700–0.700; 400) | +20.0 pts |" in table
    )
    assert "the adversary with trust on, against none, per seed: -1.0, +1.0 points" in table
