"""The evaluation gate: a candidate replaces the current student only if it is not worse.

On held-out recent teacher-labelled traffic and on the golden set (held-out rows with a label
from trusted or reliable keys: corrections and confirmations), ``measure`` takes: agreement with
the teacher, accuracy on the golden set (the student's and the teacher's), agreement per
input-length slice, expected calibration error and p50 latency; and agreement on older held-out
rows (``retained``: is what the loop learnt from earlier traffic kept?). ``decide`` is the pure
decision: each check is recorded with both values and its threshold (all from
``GateSettings``), so a failed gate says exactly why. The referee is the teacher, unless the
golden set shows it measurably worse than a student (``choose_referee``): then the human labels
judge, teacher agreement counts only on held-out rows where the trust estimate still trusts the
teacher (``teacher_weight`` ≥ ``trusted_teacher_weight``; none, when it trusts it nowhere),
and the slice and ECE checks are not made (the retained check, too, counts trusted rows only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from distillery.contracts import GateCheck, GateReport, Referee
from distillery.settings import GateSettings
from distillery.task import length_slice
from models.student import Student

ECE_BINS = 10


def expected_calibration_error(
    probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599):
    Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)| over equal-width confidence bins.
    probs (N, C); targets (N,) label index."""
    if len(probs) == 0:
        return 0.0
    confidence = probs.max(1)  # (N,)
    correct = (probs.argmax(1) == targets).astype(float)  # (N,)
    which = np.minimum((confidence * bins).astype(int), bins - 1)  # (N,) bin index
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


@dataclass(frozen=True)
class Measures:
    agreement: float  # share of held-out rows where argmax matches the teacher's
    golden_accuracy: float | None  # share of human corrections matched; None without any
    holdout_rows: int
    golden_rows: int
    slices: dict[str, list[float]] = field(default_factory=dict)  # name → [agreement, rows]
    ece: float | None = None  # calibration against the teacher's top label, on the holdout
    p50_ms: float | None = None  # median one-text latency, measured beside the other student
    hits: tuple[bool, ...] = ()  # (N,) per held-out row: agrees with the teacher
    golden_hits: tuple[bool, ...] = ()  # (G,) per golden row: matches the human label
    teacher_golden_hits: tuple[bool, ...] = ()  # (G,) per golden row: the teacher matches it
    teacher_weights: tuple[float, ...] = ()  # (N,) per held-out row: trust in its teacher label
    confidence: tuple[float, ...] = ()  # (N,) per held-out row: the student's top probability
    golden_confidence: tuple[float, ...] = ()  # (G,) per golden row: the same
    slice_names: tuple[str, ...] = ()  # (N,) per held-out row: its input-length slice
    retained_hits: tuple[bool, ...] = ()  # (R,) per older held-out row: agrees with the teacher
    retained_weights: tuple[float, ...] = ()  # (R,) per older held-out row: trust in its label


class TooFewHeldOut(RuntimeError):
    """A round not started: its holdout has fewer than ``min_holdout`` rows, so the gate could
    only reject its candidate (CI, stop 30: a movies round fired at 60 new labels, 9 of which
    hashed into a 0.2 holdout, and trained for nothing). ``more_labels``: about how many new
    labels would fill it, at ``fraction`` of them held out."""

    def __init__(self, rows: int, need: int, fraction: float) -> None:
        self.rows, self.need, self.fraction = rows, need, fraction
        self.more_labels = math.ceil((need - rows) / fraction)
        super().__init__(
            f"holdout has {rows} rows, need {need} (DISTILLERY_GATE_MIN_HOLDOUT): about "
            f"{self.more_labels} more labels fill it"
        )

    def __reduce__(self) -> tuple[type[TooFewHeldOut], tuple[int, int, float]]:
        return type(self), (self.rows, self.need, self.fraction)  # across Ray, args intact


def check_holdout(rows: int, settings: GateSettings, fraction: float) -> None:
    """Raise ``TooFewHeldOut`` before a round trains a candidate ``decide`` must reject."""
    if rows < settings.min_holdout:
        raise TooFewHeldOut(rows, settings.min_holdout, fraction)


def measure(
    student: Student,
    holdout: pd.DataFrame,
    golden: pd.DataFrame,
    p50_ms: float | None = None,
    retained: pd.DataFrame | None = None,
) -> Measures:
    """``student`` on the round's holdout, its golden set and ``retained`` (older held-out
    rows, ``training.data.retained_holdout``)."""
    agreement, ece, slices, hits = 0.0, None, {}, np.zeros(0, dtype=bool)
    confidence, golden_confidence, names = np.zeros(0), np.zeros(0), np.zeros(0, dtype=str)
    weights = np.ones(len(holdout))  # (N,) without a trust estimate the teacher is trusted
    if len(holdout):
        probs = student.predict_proba(list(holdout["text"]))  # (N, C)
        teacher = np.array(list(holdout["teacher_probs"])).argmax(1)  # (N,)
        hits = probs.argmax(1) == teacher  # (N,)
        confidence = probs.max(1)  # (N,)
        agreement = float(hits.mean())
        ece = expected_calibration_error(probs, teacher)
        names = np.array([length_slice(t) for t in holdout["text"]])
        slices = {n: [float(hits[names == n].mean()), int((names == n).sum())] for n in set(names)}
        weights = _teacher_weights(holdout)  # (N,)
    retained_hits, retained_weights = np.zeros(0, dtype=bool), np.zeros(0)
    if retained is not None and len(retained):
        teacher = np.array(list(retained["teacher_probs"])).argmax(1)  # (R,)
        retained_hits = student.predict_proba(list(retained["text"])).argmax(1) == teacher
        retained_weights = _teacher_weights(retained)  # (R,)
    golden_accuracy, golden_hits = None, np.zeros(0, dtype=bool)
    teacher_hits = np.zeros(0, dtype=bool)
    if len(golden):
        probs = student.predict_proba(list(golden["text"]))
        target = golden["golden_label" if "golden_label" in golden else "correction"].to_numpy()
        golden_hits = probs.argmax(1) == target  # (G,)
        golden_confidence = probs.max(1)  # (G,)
        golden_accuracy = float(golden_hits.mean())
        if "teacher_probs" in golden:
            teacher_hits = np.array(list(golden["teacher_probs"])).argmax(1) == target  # (G,)
    return Measures(
        agreement, golden_accuracy, len(holdout), len(golden), slices, ece, p50_ms,
        tuple(bool(h) for h in hits), tuple(bool(h) for h in golden_hits),
        tuple(bool(h) for h in teacher_hits), tuple(float(w) for w in weights),
        tuple(float(c) for c in confidence), tuple(float(c) for c in golden_confidence),
        tuple(str(n) for n in names), tuple(bool(h) for h in retained_hits),
        tuple(float(w) for w in retained_weights),
    )  # fmt: skip


def _teacher_weights(rows: pd.DataFrame) -> np.ndarray:
    """(N,) the trust estimate's weight on each row's teacher label; 1 without an estimate."""
    if "teacher_weight" not in rows:
        return np.ones(len(rows))
    return rows["teacher_weight"].astype(float).fillna(1.0).to_numpy()


def paired_se(candidate: tuple[bool, ...], current: tuple[bool, ...]) -> float:
    """Standard error of the difference of two shares measured on the same N rows, (N,) each:
    only the discordant rows count (b: candidate right alone, c: current right alone), and
    Var = (b + c − (b − c)² / N) / N² (the Wald variance behind McNemar's test; Agresti,
    Categorical Data Analysis, 2013, §11.1). 0 when the rows differ in number or are missing."""
    n = len(candidate)
    if n == 0 or n != len(current):
        return 0.0
    cand, cur = np.array(candidate), np.array(current)
    b, c = float((cand & ~cur).sum()), float((~cand & cur).sum())
    return float(np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n)


def latency_p50(students: list[Student], texts: list[str]) -> list[float]:
    """Median one-text latency (ms) of each student, taking turns text by text so that both
    see the same machine load."""
    times: list[list[float]] = [[] for _ in students]
    for text in texts:
        for i, student in enumerate(students):
            start = time.perf_counter()
            student.predict_proba([text])
            times[i].append((time.perf_counter() - start) * 1000)
    return [float(np.median(t)) if t else 0.0 for t in times]


def decide(
    candidate: Measures,
    current: Measures | None,
    settings: GateSettings,
    teacher_at_chance: bool = False,
) -> GateReport:
    """Pass when every check passes; with no current student, agreement must beat chance.
    ``teacher_at_chance``: the trust estimate found the teacher no better than a guess on the
    human labels (``feedback.human_labels.HumanLabels.teacher_at_chance``)."""
    if candidate.holdout_rows < settings.min_holdout:
        reason = f"holdout has {candidate.holdout_rows} rows, need {settings.min_holdout}"
        return GateReport(passed=False, reason=reason)
    if current is None:
        floor = settings.first_version_min_agreement
        check = GateCheck(
            "agreement", candidate.agreement, 0.0, floor, candidate.agreement >= floor
        )
        return _report([check])
    referee = choose_referee(candidate, current, settings, teacher_at_chance)
    checks: list[GateCheck] = []
    if referee == "human" and candidate.golden_rows < settings.min_golden_rows:
        reason = (
            f"the teacher cannot referee (no better than a guess on human labels) and the "
            f"golden set has {candidate.golden_rows} rows, need {settings.min_golden_rows}"
        )
        return GateReport(passed=False, reason=reason, referee=referee)
    if referee == "teacher":
        checks.append(_paired(
            "agreement", candidate.agreement, current.agreement, candidate.hits, current.hits,
            settings.agreement_margin, settings,
        ))  # fmt: skip
    else:
        checks += _trusted_agreement(candidate, current, settings)
    enough = candidate.golden_rows >= settings.min_golden_rows  # a few labels are noise
    if candidate.golden_accuracy is not None and current.golden_accuracy is not None and enough:
        checks.append(_paired(
            "golden_accuracy", candidate.golden_accuracy, current.golden_accuracy,
            candidate.golden_hits, current.golden_hits, settings.correction_margin, settings,
        ))  # fmt: skip
    checks += _retained_check(candidate, current, settings, referee)
    if referee == "teacher":
        checks += _slice_checks(candidate, current, settings)
    enough = candidate.holdout_rows >= settings.min_ece_rows  # ECE of a few rows is noise
    if referee == "teacher" and candidate.ece is not None and current.ece is not None and enough:
        checks.append(
            _at_most("ece", candidate.ece, current.ece + settings.ece_margin, current.ece)
        )
    if candidate.p50_ms is not None and current.p50_ms is not None:
        limit = max(
            current.p50_ms * settings.latency_ratio, current.p50_ms + settings.latency_slack_ms
        )
        checks.append(_at_most("p50_latency_ms", candidate.p50_ms, limit, current.p50_ms))
    return _report(checks, referee)


def teacher_gap(student: Measures, settings: GateSettings) -> float | None:
    """How far the teacher is measurably below ``student`` on the golden set: the accuracy
    difference minus ``confidence_z`` paired standard errors (> 0: measurably worse); None
    with fewer than ``min_golden_rows`` golden rows."""
    hits, teacher = student.golden_hits, student.teacher_golden_hits
    if len(hits) < settings.min_golden_rows or len(teacher) != len(hits):
        return None
    diff = float(np.mean(hits)) - float(np.mean(teacher))
    return diff - settings.confidence_z * paired_se(hits, teacher)


def choose_referee(
    candidate: Measures, current: Measures, settings: GateSettings, teacher_at_chance: bool = False
) -> Referee:
    """The human labels referee ("human") when the teacher is measurably worse on them than
    either student, or no better than a guess on them (the trust estimate, over all human
    labels so far), or when ``referee`` says so: agreement with a teacher that people show is
    wrong would reject exactly the candidate that learnt from them."""
    if settings.referee != "auto":
        return "human" if settings.referee == "human" else "teacher"
    if teacher_at_chance:
        return "human"
    gaps = (teacher_gap(candidate, settings), teacher_gap(current, settings))
    return "human" if any(g is not None and g > 0 for g in gaps) else "teacher"


def _trusted(
    candidate: tuple[bool, ...],
    current: tuple[bool, ...],
    weights: tuple[float, ...],
    settings: GateSettings,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both students' hits (T,) on the rows whose teacher label the trust estimate still trusts
    (``teacher_weight`` ≥ ``trusted_teacher_weight``); None when the rows do not line up or
    fewer than ``min_holdout`` are trusted."""
    w = np.array(weights)  # (N,)
    if len(w) != len(candidate) or len(candidate) != len(current):
        return None
    trusted = w >= settings.trusted_teacher_weight  # (N,)
    if int(trusted.sum()) < settings.min_holdout:
        return None
    return np.array(candidate)[trusted], np.array(current)[trusted]


def _trusted_agreement(
    candidate: Measures, current: Measures, settings: GateSettings
) -> list[GateCheck]:
    """Under the human referee, teacher agreement on the held-out rows whose teacher label the
    trust estimate still trusts: people showing the teacher wrong on one label or slice does not
    make it wrong elsewhere, and without this check a candidate trained on shuffled labels passed
    a golden set of confirmed answers (CI, stop 22). No check on fewer than ``min_holdout`` rows."""
    found = _trusted(candidate.hits, current.hits, candidate.teacher_weights, settings)
    if found is None:
        return []
    cand, cur = found  # (T,) each
    return [_paired("agreement", float(cand.mean()), float(cur.mean()), tuple(cand), tuple(cur),
                    settings.agreement_margin, settings)]  # fmt: skip


def _paired(
    name: str,
    candidate: float,
    current: float,
    candidate_hits: tuple[bool, ...],
    current_hits: tuple[bool, ...],
    margin: float,
    settings: GateSettings,
) -> GateCheck:
    """``candidate`` may fall below ``current`` by ``margin`` plus ``confidence_z`` paired
    standard errors of the difference on the same rows (none when the hits do not pair)."""
    noise = settings.confidence_z * paired_se(candidate_hits, current_hits)
    return _at_least(name, candidate, current, margin + noise)


def _slice_checks(
    candidate: Measures, current: Measures, settings: GateSettings
) -> list[GateCheck]:
    """Teacher agreement per input-length slice with enough rows (the same rows for both), which
    may drop ``slice_margin`` plus ``confidence_z`` paired standard errors on the slice's rows,
    as the overall agreement may. With a flat 0.08 and no noise term, a 53-row slice rejected a
    candidate that gained on the 800 held-out texts a domain behind it (stop 32, e2e run 1:
    medium .679 against .774, five rows in 53; with 9 to 15 discordant rows one paired standard
    error of that difference is .055 to .072)."""
    found = []
    names = np.array(candidate.slice_names)  # (N,)
    paired = len(names) == len(candidate.hits) == len(current.hits)
    cand_hits, cur_hits = np.array(candidate.hits), np.array(current.hits)  # (N,) each
    for name, (agreement, rows) in sorted(candidate.slices.items()):
        if rows >= settings.min_slice_rows and name in current.slices:
            inside = names == name if paired else np.zeros(len(cand_hits), dtype=bool)  # (N,)
            found.append(_paired(
                f"slice:{name}", agreement, current.slices[name][0], tuple(cand_hits[inside]),
                tuple(cur_hits[inside]), settings.slice_margin, settings,
            ))  # fmt: skip
    return found


def _retained_check(
    candidate: Measures, current: Measures, settings: GateSettings, referee: Referee
) -> list[GateCheck]:
    """Teacher agreement on the older held-out rows (the same rows for both) may drop
    ``retained_margin`` plus ``confidence_z`` paired standard errors; under the human
    referee, on the rows whose teacher label is still trusted (``_trusted``: in the e2e run of
    stop 33 the human referee judged two of three rounds, which this check would otherwise have
    skipped). Not checked on fewer than ``min_holdout`` rows."""
    cand_hits, cur_hits = candidate.retained_hits, current.retained_hits
    if referee == "human":
        found = _trusted(cand_hits, cur_hits, candidate.retained_weights, settings)
    elif len(cand_hits) == len(cur_hits) and len(cand_hits) >= settings.min_holdout:
        found = np.array(cand_hits), np.array(cur_hits)
    else:
        found = None
    if found is None:
        return []
    cand, cur = found  # (R,) each
    return [_paired("retained_agreement", float(cand.mean()), float(cur.mean()), tuple(cand),
                    tuple(cur), settings.retained_margin, settings)]  # fmt: skip


def _at_least(name: str, candidate: float, current: float, margin: float) -> GateCheck:
    threshold = current - margin
    return GateCheck(name, candidate, current, threshold, candidate >= threshold)


def _at_most(name: str, candidate: float, limit: float, current: float) -> GateCheck:
    return GateCheck(name, candidate, current, limit, candidate <= limit, higher_is_better=False)


def _report(checks: list[GateCheck], referee: Referee = "teacher") -> GateReport:
    failed = [c for c in checks if not c.passed]
    reason = "; ".join(
        f"{c.name} {c.candidate:.3f} {'<' if c.higher_is_better else '>'} {c.threshold:.3f} "
        f"(current {c.current:.3f})"
        for c in failed
    )
    return GateReport(
        passed=not failed, checks=checks, reason=reason or "all checks passed", referee=referee
    )
