"""The sampling benchmark's numbers: scores per model, signal AUCs, means over seeds, paired
gains, labels saved and the verdict.

Three ways to measure how far a student is from the teacher on an eval set:

- **teacher gap** (the headline): 1 − agreement with the teacher's argmax on the texts where the
  teacher is confident (its top-1 minus top-2 probability ≥ ``CONFIDENT``);
- **accuracy gap**: the teacher's accuracy minus the student's, both against the human labels;
- **agreement**: argmax agreement with the teacher on every text.

Every gain is "targeted minus uniform" on the score (agreement or accuracy), so a positive gain is
targeted closing more of the gap.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.sampling_data import Split, to_events
from distillery.vader import VaderRow

if TYPE_CHECKING:
    from models.student import Student
    from services.sampling import Policy

CONFIDENT = 0.2  # teacher margin (top-1 − top-2 probability) from which its label counts
NOVEL = 1.0  # the novelty score that marks the training window's 95th percentile
HEADLINE = "confident_agreement"  # the score whose complement is the headline teacher gap
SCORES = ("confident_agreement", "accuracy", "agreement")
GAINS = ((HEADLINE, "gain"), ("accuracy", "accuracy_gain"), ("agreement", "agreement_gain"))


def teacher_view(rows: list[VaderRow], logits: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The teacher's argmax (N,) and margin (N,): top-1 minus top-2 of softmax(logits)."""
    stacked = np.stack([logits[row.text] for row in rows])  # (N, C)
    probs = np.exp(stacked - stacked.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)  # (N, C)
    top = np.sort(probs, axis=-1)[:, ::-1]  # (N, C)
    return stacked.argmax(-1), top[:, 0] - top[:, 1]


def score(
    predicted: np.ndarray, rows: list[VaderRow], logits: dict[str, np.ndarray], labels: list[str]
) -> dict[str, float]:
    """predicted (N,) label indices → agreement with the teacher (all rows, and the rows where it
    is confident), accuracy against the human labels, and the accuracy gap (teacher − this)."""
    teacher, margins = teacher_view(rows, logits)  # (N,), (N,)
    human = np.array([labels.index(row.label) for row in rows])  # (N,)
    confident = margins >= CONFIDENT  # (N,)
    accuracy = float((predicted == human).mean())
    return {
        "agreement": float((predicted == teacher).mean()),
        "confident_agreement": float((predicted == teacher)[confident].mean()),
        "accuracy": accuracy,
        "accuracy_gap": float((teacher == human).mean()) - accuracy,
    }


def evaluate(
    student: Student, rows: list[VaderRow], logits: dict[str, np.ndarray], labels: list[str]
) -> dict[str, float]:
    """``score`` of the student's argmax on ``rows``."""
    probs = student.predict_proba([row.text for row in rows])  # (N, C)
    return score(probs.argmax(-1), rows, logits, labels)


def unsure_stats(
    predicted: np.ndarray, rows: list[VaderRow], logits: dict[str, np.ndarray]
) -> dict[str, float]:
    """How much of plain disagreement is the teacher's own coin flips: the share of ``rows``
    where the teacher is unsure (margin < ``CONFIDENT``) and the share of the student's
    disagreements that fall there. predicted (N,)."""
    teacher, margins = teacher_view(rows, logits)
    unsure, wrong = margins < CONFIDENT, predicted != teacher
    return {
        "teacher_unsure_share": round(float(unsure.mean()), 3),
        "disagreements_unsure_share": round(float(unsure[wrong].mean()), 3) if wrong.any() else 0,
    }


def uniform_budget_to_match(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """Labels uniform sampling needs to reach ``target`` score: linear interpolation over
    ``curve`` ((labels, score) by increasing labels) at its first crossing; the first point's
    labels if it is already there; None if the curve never gets there."""
    if not curve:
        return None
    if curve[0][1] >= target:
        return curve[0][0]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if y1 >= target > y0:
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
    return None


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive row scores above a random negative one (ties count
    half): scores (N,), positive (N,) bool; nan without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    above = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(above + 0.5 * ties)


def stream_stats(
    split: Split, probs: np.ndarray, novelty: np.ndarray, policy: Policy
) -> dict[str, dict[str, float]]:
    """Per domain in the stream: novelty median / share > 1, and each candidate reason's share
    (uniform drawn with ``policy.base_rate``, seed 0)."""
    from services.sampling import candidate

    events = to_events(split.stream, probs, novelty)
    rng = random.Random(0)
    reasons = [candidate(e, policy, rng.random()) or "none" for e in events]
    out: dict[str, dict[str, float]] = {}
    for domain in ("movies", "tweets"):
        idx = [i for i, row in enumerate(split.stream) if row.domain == domain]
        counts = Counter(reasons[i] for i in idx)
        out[domain] = {
            "requests": len(idx),
            "novelty_median": round(float(np.median(novelty[idx])), 3),
            "novel_share": round(float((novelty[idx] > NOVEL).mean()), 3),
            **{
                f"{reason}_reason_share": round(counts[reason] / len(idx), 3)
                for reason in ("low_margin", "novel", "uniform", "none")
            },
        }
    return out


def signal_stats(
    split: Split, probs: np.ndarray, novelty: np.ndarray, v1_wrong: np.ndarray, policy: Policy
) -> dict[str, float]:
    """Does each sampling signal find the shift, and the requests v1 gets wrong (disagrees
    with the teacher)? AUCs and v1's error rate within each reason's candidates."""
    from services.sampling import margin

    margins = np.array([margin(list(p)) for p in probs])  # (N,)
    tweet = np.array([row.domain == "tweets" for row in split.stream])  # (N,)
    low, novel = margins < policy.margin_below, novelty > policy.novelty_above
    return {
        "novelty_auc_tweet_vs_movie": round(auc(novelty, tweet), 3),
        "novelty_auc_v1_wrong": round(auc(novelty, v1_wrong), 3),
        "low_margin_auc_v1_wrong": round(auc(-margins, v1_wrong), 3),
        "v1_wrong_movies": round(float(v1_wrong[~tweet].mean()), 3),
        "v1_wrong_tweets": round(float(v1_wrong[tweet].mean()), 3),
        "v1_wrong_low_margin": round(float(v1_wrong[low].mean()), 3) if low.any() else 0.0,
        "v1_wrong_novel": round(float(v1_wrong[novel].mean()), 3) if novel.any() else 0.0,
        "v1_wrong_all": round(float(v1_wrong.mean()), 3),
    }


def mean_rows(runs: list[dict]) -> list[dict]:
    """Runs averaged over seeds, per (strategy, budget), in first-seen order."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["strategy"], run["budget"]), []).append(run)
    out = []
    for (strategy, budget), group in groups.items():
        row: dict[str, Any] = {"strategy": strategy, "budget": budget, "seeds": len(group)}
        for key in ("labels", "tweet_picks", "v1_wrong_picks"):
            row[key] = statistics.mean(r[key] for r in group)
        for domain in ("tweets", "movies"):
            for metric in (*SCORES, "accuracy_gap"):
                row[f"{domain}_{metric}"] = statistics.mean(r[domain][metric] for r in group)
        row[f"tweets_{HEADLINE}_by_seed"] = [r["tweets"][HEADLINE] for r in group]
        out.append(row)
    return out


def paired(runs: list[dict]) -> list[tuple[dict, dict]]:
    """(strategy run, its uniform baseline) from the alternating lists that ``compare`` and
    ``sweep`` return."""
    return list(zip(runs[::2], runs[1::2], strict=True))


def gains(pairs: list[tuple[dict, dict]], domain: str, metric: str) -> list[float]:
    """Per pair, strategy minus uniform on ``domain``'s ``metric``, in points."""
    return [100 * (x[domain][metric] - y[domain][metric]) for x, y in pairs]


def summarise(runs: list[dict], v1_tweets: float) -> list[dict]:
    """Per budget: targeted vs uniform on the tweets' headline teacher gap (means over seeds),
    the paired gains per seed in points on every score, and labels saved: the uniform labels
    needed to match targeted's headline score, minus targeted's labels; the uniform curve
    starts at v1 (``v1_tweets``, its headline score) with 0 labels."""
    means = mean_rows(runs)
    by = {(m["strategy"], m["budget"]): m for m in means}
    budgets = sorted({m["budget"] for m in means})
    key = f"tweets_{HEADLINE}"
    curve = [(0.0, v1_tweets)] + [
        (by["uniform", b]["labels"], by["uniform", b][key]) for b in budgets
    ]
    out = []
    for b in budgets:
        t, u = by["targeted", b], by["uniform", b]
        needed = uniform_budget_to_match(curve, t[key])
        pairs = [(x, y) for x, y in paired(runs) if x["budget"] == b]
        row: dict[str, Any] = {
            "budget": b,
            "labels": t["labels"],
            "targeted_gap": 1 - t[key],
            "uniform_gap": 1 - u[key],
            "targeted_accuracy_gap": t["tweets_accuracy_gap"],
            "uniform_accuracy_gap": u["tweets_accuracy_gap"],
            "uniform_labels_to_match": needed,
            "labels_saved": None if needed is None else needed - t["labels"],
        }
        for metric, name in GAINS:
            row[f"{name}_points_by_seed"] = gains(pairs, "tweets", metric)
            row[f"{name}_points"] = statistics.mean(row[f"{name}_points_by_seed"])
        out.append(row)
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (nan for fewer than two values)."""
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return statistics.mean(values), se


def verdict(summary: list[dict]) -> str:
    """Did targeted close more of the headline teacher gap than uniform, by how much, beyond
    noise (the standard error of the mean of the paired, same-seed, differences)? Then the same
    for the accuracy gap and plain agreement."""
    per_budget = [s["gain_points"] for s in summary]
    mean, se = mean_se([d for s in summary for d in s["gain_points_by_seed"]])
    n = sum(len(s["gain_points_by_seed"]) for s in summary)
    wins = sum(g > 0 for g in per_budget)
    outcome = "beat" if wins == len(per_budget) else "lost to" if wins == 0 else "was ahead of"
    real = "more than" if abs(mean) > 2 * se else "within"
    saved = ", ".join(
        f"B={s['budget']}: "
        + ("not reached" if s["labels_saved"] is None else f"{s['labels_saved']:+.0f}")
        for s in summary
    )
    others = []
    for key, name in (("accuracy_gain", "accuracy gap"), ("agreement_gain", "plain agreement")):
        m, e = mean_se([d for s in summary for d in s.get(f"{key}_points_by_seed", [])] or [0.0])
        others.append(f"{name} {m:+.1f} (± {e:.1f})")
    return (
        f"**Verdict:** targeted {outcome} uniform on the tweet teacher gap at {wins}/"
        f"{len(per_budget)} budgets: mean {mean:+.1f} points (per budget {min(per_budget):+.1f} "
        f"to {max(per_budget):+.1f}; standard error {se:.1f} over {n} paired runs), {real} two "
        f"standard errors of zero. Labels saved (uniform labels to match − B): {saved}. "
        f"Mean paired gain on the other measures (points ± standard error): {', '.join(others)}."
    )


def sweep_rows(runs: list[dict]) -> list[dict]:
    """Per (variant, budget), means over seeds: what was picked, the headline gap, and the paired
    gains (points) over uniform at the same count."""
    groups: dict[tuple[str, int], list[tuple[dict, dict]]] = {}
    for run, base in paired(runs):
        groups.setdefault((run["strategy"], run["budget"]), []).append((run, base))
    out = []
    for (name, budget), group in groups.items():
        labels = statistics.mean(r["labels"] for r, _ in group)
        row: dict[str, Any] = {"variant": name, "budget": budget, "labels": labels}
        row["tweet_share"] = statistics.mean(r["tweet_picks"] for r, _ in group) / labels
        row["v1_wrong_share"] = statistics.mean(r["v1_wrong_picks"] for r, _ in group) / labels
        for domain in ("tweets", "movies"):
            row[f"{domain}_gap"] = 1 - statistics.mean(r[domain][HEADLINE] for r, _ in group)
            row[f"{domain}_gain_points"] = statistics.mean(gains(group, domain, HEADLINE))
        row["tweets_accuracy_gain_points"] = statistics.mean(gains(group, "tweets", "accuracy"))
        out.append(row)
    return out
