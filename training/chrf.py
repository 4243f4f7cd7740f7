"""chrF: the character n-gram F-score between a candidate and a reference text.

Popović (2015), "chrF: character n-gram F-score for automatic MT evaluation", WMT; the
variant computed here is sacreBLEU's default ``CHRF()`` (Post 2018, "A Call for Clarity in
Reporting BLEU Scores"): character orders 1..6, whitespace removed, β = 2 (recall weighs
twice), per-order precision and recall averaged over the orders both sides have, then one
F-score, on a 0–100 scale. ``tests/unit/test_chrf.py`` checks it against sacreBLEU.

Why chrF and not BLEU or ROUGE-L for the gate: a one-sentence reply has few words, so word
n-gram scores are mostly zero or one; characters give a graded signal that also credits
inflections ("refund" / "refunded").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

ORDER = 6
BETA = 2.0
_EPS = 1e-16


def _ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def statistics(candidate: str, reference: str, order: int = ORDER) -> list[tuple[int, int, int]]:
    """Per order n = 1..``order``: (candidate n-grams, reference n-grams, matched n-grams)."""
    cand, ref = "".join(candidate.split()), "".join(reference.split())
    out = []
    for n in range(1, order + 1):
        c, r = _ngrams(cand, n), _ngrams(ref, n)
        out.append((sum(c.values()), sum(r.values()), sum((c & r).values())))
    return out


def score(stats: Sequence[tuple[int, int, int]], beta: float = BETA) -> float:
    """chrF on a 0–100 scale from summed ``statistics`` (a sentence's, or a corpus's)."""
    precision = recall = 0.0
    orders = 0
    for n_cand, n_ref, matched in stats:
        if n_cand > 0 and n_ref > 0:
            precision += matched / n_cand
            recall += matched / n_ref
            orders += 1
    if orders == 0:
        return 0.0
    precision, recall = precision / orders, recall / orders
    b2 = beta**2
    if precision + recall == 0:
        return 0.0
    return 100.0 * (1 + b2) * precision * recall / max(b2 * precision + recall, _EPS)


def chrf(candidate: str, reference: str) -> float:
    """Sentence chrF of ``candidate`` against ``reference`` (0–100)."""
    return score(statistics(candidate, reference))


def mean_chrf(candidates: Sequence[str], references: Sequence[str]) -> float:
    """The mean sentence chrF over aligned pairs: each reply counts once, whatever its length."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates against {len(references)} references")
    if not candidates:
        raise ValueError("no pairs to score")
    return sum(map(chrf, candidates, references)) / len(candidates)
