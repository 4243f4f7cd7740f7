"""The cascade's threshold with a guarantee: selective classification (Geifman & El-Yaniv 2017).

The student answers a text when its top probability κ is at least a threshold θ; the teacher
answers the rest (``services.cascade``). A guessed θ says nothing about the quality users get;
this one comes with a bound. Given a target accuracy on the texts the student answers (a share of
the teacher's), ``threshold`` returns the lowest θ (the most traffic kept on the student) whose
covered rows have a Clopper–Pearson lower confidence bound on accuracy at or above the target,
with probability at least 1 − δ over the draw of the rows.

It follows SGR, the "selection with guaranteed risk" algorithm of Geifman & El-Yaniv,
"Selective Classification for Deep Neural Networks" (NeurIPS 2017), Algorithm 1: a binary search
over the sorted confidences, each of its ⌈log2 m⌉ steps testing one θ with the bound at
δ / ⌈log2 m⌉ (a union bound over the thresholds tried), so the returned θ holds at δ overall.
Accuracy here is 1 − their risk under the 0/1 loss.

Rows and their reference label (``training.gate`` measures both): held-out teacher-labelled
traffic, judged by the teacher's label; and the golden set, judged by the human label. The target
is ``share`` × the teacher's accuracy on the golden set (×1.0 without enough golden rows: the
teacher is then the reference).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from distillery.contracts import Selection
from training.gate import Measures


def accuracy_lower_bound(correct: int, n: int, delta: float) -> float:
    """Clopper–Pearson: the accuracy p with P(Binomial(n, p) ≥ correct) = δ (0 when none)."""
    if correct <= 0:
        return 0.0
    return float(beta.ppf(delta, correct, n - correct + 1))


def threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float, delta: float = 0.05
) -> Selection:
    """SGR: the lowest θ among the confidences whose covered accuracy bound is ≥ ``target``.

    confidence: (N,) the student's top probability per row; correct: (N,) its answer was right.
    """
    n = len(confidence)
    if n == 0:
        return _none(target, delta, 0)
    kappa = np.sort(confidence)  # (N,) ascending: θ = kappa[z] keeps the rows with κ ≥ θ
    hits = correct[np.argsort(confidence, kind="stable")].astype(bool)
    right_from = np.cumsum(hits[::-1])[::-1]  # (N,) correct answers among rows z … N − 1
    steps = max(1, math.ceil(math.log2(n)))
    at = delta / steps  # a union bound over the thresholds the search tests

    def first(z: int) -> int:  # ties: every row with κ equal to kappa[z] is kept too
        return int(np.searchsorted(kappa, kappa[z], side="left"))

    low, high, best = 0, n - 1, None
    for _ in range(steps):
        z = first((low + high + 1) // 2)
        if accuracy_lower_bound(int(right_from[z]), n - z, at) >= target:
            best, high = z, z  # met: try a lower θ, keeping more rows
        else:
            low = max(low + 1, (low + high + 1) // 2)  # not met: a higher θ
        if low >= high:
            break
    if best is None:
        return _none(target, delta, n)
    kept, right = n - best, int(right_from[best])
    return Selection(
        threshold=float(kappa[best]),
        coverage=kept / n,
        accuracy=right / kept,
        lower_bound=accuracy_lower_bound(right, kept, at),
        target=target,
        delta=delta,
        rows=n,
    )


def _none(target: float, delta: float, rows: int) -> Selection:
    """No threshold met ``target``: the teacher would answer everything."""
    return Selection(
        threshold=None, coverage=0.0, accuracy=None, lower_bound=None,
        target=target, delta=delta, rows=rows,
    )  # fmt: skip


def offer(student: Measures, share: float, delta: float, min_golden_rows: int) -> Selection:
    """The threshold for ``student`` from the gate's rows: held-out traffic judged by the
    teacher's label, the golden set by the human one; the target is ``share`` × the teacher's
    golden accuracy, or ``share`` alone with fewer than ``min_golden_rows`` golden rows."""
    confidence = np.array(student.confidence + student.golden_confidence)  # (N + G,)
    correct = np.array(student.hits + student.golden_hits, dtype=bool)  # (N + G,)
    teacher = student.teacher_golden_hits
    reference = float(np.mean(teacher)) if len(teacher) >= min_golden_rows and teacher else 1.0
    return threshold(confidence, correct, share * reference, delta)
