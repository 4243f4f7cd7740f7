"""SGR's threshold (``training.selective``): its bound against scipy's binomial, its coverage
against an exhaustive search, and its guarantee on simulated draws."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from training.gate import Measures
from training.selective import accuracy_lower_bound, offer, threshold


def test_the_lower_bound_is_clopper_pearsons() -> None:
    bound = accuracy_lower_bound(90, 100, 0.05)
    # at the bound, seeing ≥ 90 of 100 right has probability exactly δ
    assert math.isclose(binom.sf(89, 100, bound), 0.05, rel_tol=1e-6)
    assert bound < 0.9 and accuracy_lower_bound(0, 10, 0.05) == 0.0
    assert accuracy_lower_bound(100, 100, 0.05) < 1.0


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated student: right with probability equal to its confidence."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    return confidence, rng.uniform(size=n) < confidence


def test_the_covered_rows_meet_the_target_at_the_bound() -> None:
    confidence, correct = _rows(4_000, 0)
    chosen = threshold(confidence, correct, target=0.9, delta=0.05)
    kept = confidence >= chosen.threshold
    assert math.isclose(chosen.coverage, kept.mean())
    assert math.isclose(chosen.accuracy or 0, correct[kept].mean())
    assert (chosen.lower_bound or 0) >= 0.9
    assert chosen.accuracy is not None and chosen.accuracy > 0.9
    # a calibrated student at ≥ 0.9 mean accuracy keeps roughly its top 0.2 + of confidences
    assert 0.1 < chosen.coverage < 0.5


def test_the_search_is_close_to_the_best_single_threshold() -> None:
    """Exhaustively, at the same per-test δ, the lowest θ that meets the target keeps at most a
    little more than SGR's binary search finds."""
    confidence, correct = _rows(1_000, 1)
    chosen = threshold(confidence, correct, target=0.85, delta=0.05)
    steps = math.ceil(math.log2(len(confidence)))
    best = 0.0
    for theta in np.sort(confidence):
        kept = confidence >= theta
        bound = accuracy_lower_bound(int(correct[kept].sum()), int(kept.sum()), 0.05 / steps)
        if bound >= 0.85:
            best = max(best, kept.mean())
    assert chosen.coverage <= best + 1e-9 and chosen.coverage >= best - 0.05


def test_no_threshold_meets_an_impossible_target() -> None:
    confidence, correct = _rows(500, 2)
    chosen = threshold(confidence, np.zeros_like(correct), target=0.5)
    assert chosen.threshold is None and chosen.coverage == 0.0 and chosen.accuracy is None
    assert threshold(np.zeros(0), np.zeros(0, bool), 0.9).rows == 0


def test_a_perfect_student_keeps_nearly_everything() -> None:
    confidence = np.linspace(0.5, 1.0, 800)
    chosen = threshold(confidence, np.ones(800, bool), target=0.95)
    assert chosen.coverage > 0.9 and chosen.accuracy == 1.0


def test_the_guarantee_holds_on_fresh_draws() -> None:
    """Over 200 calibration draws, the true accuracy above the offered θ falls below the
    target in at most about δ of them (here: none may exceed 2δ)."""
    failures = 0
    for seed in range(200):
        confidence, correct = _rows(600, 100 + seed)
        chosen = threshold(confidence, correct, target=0.9, delta=0.1)
        if chosen.threshold is None:
            continue
        true_accuracy = (chosen.threshold + 1.0) / 2  # uniform κ above θ, calibrated
        failures += true_accuracy < 0.9
    assert failures <= 0.2 * 200


def test_the_offer_targets_a_share_of_the_teachers_golden_accuracy() -> None:
    confidence, correct = _rows(400, 3)
    golden = (True,) * 15 + (False,) * 5  # the teacher is right on 0.75 of 20 golden rows
    measured = Measures(
        agreement=float(correct.mean()), golden_accuracy=0.8, holdout_rows=380, golden_rows=20,
        hits=tuple(bool(h) for h in correct[:380]),
        golden_hits=tuple(bool(h) for h in correct[380:]),
        teacher_golden_hits=golden, confidence=tuple(float(c) for c in confidence[:380]),
        golden_confidence=tuple(float(c) for c in confidence[380:]),
    )  # fmt: skip
    chosen = offer(measured, share=0.98, delta=0.05, min_golden_rows=20)
    assert chosen.rows == 400 and math.isclose(chosen.target, 0.98 * 0.75)
    assert chosen.threshold is not None and (chosen.lower_bound or 0) >= chosen.target
    fewer = offer(measured, share=0.98, delta=0.05, min_golden_rows=50)
    assert math.isclose(fewer.target, 0.98)  # too few golden rows: the teacher is the reference
    assert fewer.coverage < chosen.coverage
