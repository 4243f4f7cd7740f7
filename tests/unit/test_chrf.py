"""chrF (``training.chrf``) against sacreBLEU's ``CHRF()``, on real replies and edge cases."""

from __future__ import annotations

import math

import pytest
from sacrebleu.metrics import CHRF

from training.chrf import chrf, mean_chrf

PAIRS = [
    ("Thank you for your feedback!", "Thanks so much for the feedback."),
    (
        "We're sorry the charger broke; we'll send a refund.",
        "Sorry it broke - a refund is on its way",
    ),
    ("Glad you enjoyed the movie!", "Glad you enjoyed the movie!"),
    ("ok", "We are sorry to hear that your order arrived late."),
    ("a", "b"),
    ("", "something"),
]


@pytest.mark.parametrize(("candidate", "reference"), PAIRS)
def test_sentence_chrf_is_sacrebleus(candidate: str, reference: str) -> None:
    expected = CHRF().sentence_score(candidate, [reference]).score
    assert math.isclose(chrf(candidate, reference), expected, abs_tol=1e-9)


def test_identical_is_100_and_the_mean_counts_each_pair_once() -> None:
    assert chrf("Glad you liked it.", "Glad you liked it.") == 100.0
    assert mean_chrf(["x y", "Glad"], ["x y", "Glad"]) == 100.0
    with pytest.raises(ValueError, match="2 candidates against 1 references"):
        mean_chrf(["a", "b"], ["a"])
