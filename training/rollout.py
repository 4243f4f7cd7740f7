"""Shadow → canary → full promotion with automatic rollback: the pure state machine.

A candidate that passed the gate first answers *mirrored* traffic in shadow (users still get the
stable student's answer), then a share of real traffic in canary, then all of it. In each stage
``evaluate`` compares the candidate with the stable student on the same window of live evidence:

- teacher agreement, on the requests the sampler sent to the teacher (both stages);
- error rate, per answered (canary) or mirrored (shadow) text;
- negative-feedback rate, the share of ratings ≤ ``bad_rating_max``, and p99 model latency: in
  canary only. Users see the candidate's answers only then, and a shadow's mirrored forward
  waits behind the stable one on the same replica, so its latency would be judged unfairly
  (measured: 55 vs 31 ms for two students of the same size).

A check is *pending* until both versions have its minimum evidence. A check that fails rolls the
candidate back at once; a stage ends after its time once every check passed, or after
``max_stage_s`` if none failed, with the unmeasured checks named in the reason. A canary is never
*promoted* that way while a check in ``required_checks`` is pending: before, promotion on a quiet
service was a timer (the defaults need roughly 3–7 texts/s for a canary to measure anything).
It is held, and each ``max_stage_s`` without that evidence its share is multiplied by
``share_step`` up to ``max_canary_share`` (more of the traffic there is, to measure it on);
held ``max_hold_s`` at the widest, it is rolled back, so that a quiet service still learns from
its next round. An operator may promote by hand at any time.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from distillery.contracts import Evidence, OnlineCheck, Stage
from distillery.settings import RolloutSettings
from feedback.examples import latest_ratings
from training.chrf import mean_chrf

Action = Literal["wait", "advance", "rollback", "widen"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    checks: list[OnlineCheck] = field(default_factory=list)
    share: float | None = None  # "widen": the canary's new share

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def takes_candidate(share: float, rollout_id: str, client_key: str | None) -> bool:
    """Canary routing: with a client key the same client always lands on the same side for the
    whole rollout (a stable hash of rollout id and key); without one, each text is a coin flip."""
    if client_key is None:
        return random.random() < share
    digest = hashlib.sha256(f"{rollout_id}|{client_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _adjusted(part: int, whole: int) -> float:
    return (part + 1) / (whole + 2)


def _pending(name: str, need: str) -> OnlineCheck:
    return OnlineCheck(name, "pending", None, None, None, f"{name}: waiting for {need}")


def _share_check(
    name: str,
    stable: tuple[int, int],
    cand: tuple[int, int],
    need: tuple[int, str],
    change: float,
    z: float,
    higher_is_better: bool = False,
    digits: int = 3,
) -> OnlineCheck:
    """Compare two shares (part, whole): the candidate's may fall ``change`` below the stable
    one's (``higher_is_better``) or rise ``change`` above it, plus ``z`` standard errors of the
    difference of two proportions, so that a few unlucky samples do not roll back a good
    candidate (measured: 20 uniform labels each put a candidate at .85 against .96).

    The difference is Agresti–Caffo's (2000): each share adds one success and one failure
    before its rate and standard error are taken. The plain Wald error is zero for a stable
    share of 0/9, and rolled back a better candidate on 4 negative ratings of 9 (drift bench).
    ``limit`` is the same bound on the candidate's plain share, as reported."""
    minimum, what = need
    if min(stable[1], cand[1]) < minimum:
        return _pending(name, f"{minimum} {what} per version")
    s, c = _rate(*stable), _rate(*cand)
    s_adj, c_adj = _adjusted(*stable), _adjusted(*cand)
    se = math.sqrt(s_adj * (1 - s_adj) / (stable[1] + 2) + c_adj * (1 - c_adj) / (cand[1] + 2))
    allowed = change + z * se
    bound = s_adj - allowed if higher_is_better else s_adj + allowed  # on c_adj
    limit = (bound * (cand[1] + 2) - 1) / cand[1]  # c_adj ≤ bound ⇔ c ≤ limit
    ok = c >= limit if higher_is_better else c <= limit
    sign = ("≥" if ok else "<") if higher_is_better else ("≤" if ok else ">")
    detail = f"{name} {c:.{digits}f} {sign} {limit:.{digits}f} (stable {s:.{digits}f})"
    return OnlineCheck(name, "pass" if ok else "fail", c, s, limit, detail)


def _agreement(stable: Evidence, cand: Evidence, cfg: RolloutSettings) -> OnlineCheck:
    return _share_check(
        "teacher_agreement", (stable.agreed, stable.labelled), (cand.agreed, cand.labelled),
        (cfg.min_labels, "teacher labels"), cfg.max_agreement_drop, cfg.confidence_z,
        higher_is_better=True,
    )  # fmt: skip


def _negative(stable: Evidence, cand: Evidence, cfg: RolloutSettings) -> OnlineCheck:
    return _share_check(
        "negative_feedback", (stable.negative, stable.rated), (cand.negative, cand.rated),
        (cfg.min_feedback, "ratings"), cfg.max_negative_feedback_rise, cfg.confidence_z,
    )  # fmt: skip


def _errors(stable: Evidence, cand: Evidence, cfg: RolloutSettings) -> OnlineCheck:
    return _share_check(
        "error_rate", (stable.errors, stable.requests), (cand.errors, cand.requests),
        (cfg.min_requests, "requests"), cfg.max_error_rate_rise, cfg.confidence_z, digits=4,
    )  # fmt: skip


def _latency(stable: Evidence, cand: Evidence, cfg: RolloutSettings) -> OnlineCheck:
    if min(stable.requests, cand.requests) < cfg.min_requests or None in (
        stable.p99_ms,
        cand.p99_ms,
    ):
        return _pending("p99_latency", f"{cfg.min_requests} requests per version")
    s, c = float(stable.p99_ms or 0.0), float(cand.p99_ms or 0.0)
    limit = max(s * cfg.max_p99_ratio, s + cfg.p99_slack_ms)
    ok = c <= limit
    detail = f"p99_latency {c:.1f} ms {'≤' if ok else '>'} {limit:.1f} ms (stable {s:.1f} ms)"
    return OnlineCheck("p99_latency", "pass" if ok else "fail", c, s, limit, detail)


def checks(
    stage: Stage,
    stable: Evidence,
    candidate: Evidence,
    cfg: RolloutSettings,
    referee: str = "teacher",
) -> list[OnlineCheck]:
    """The stage's checks. With ``referee="human"`` (the gate found the teacher measurably
    wrong on human labels, ``training.gate.choose_referee``) teacher agreement is skipped: a
    candidate that learnt from people disagrees with that teacher by design."""
    agreement, errors = _agreement(stable, candidate, cfg), _errors(stable, candidate, cfg)
    if referee == "human":
        agreement = OnlineCheck(
            "teacher_agreement", "skipped", agreement.candidate, agreement.stable, None,
            "teacher_agreement: not checked, the gate found the teacher wrong on human labels",
        )  # fmt: skip
    if stage == "shadow":  # users see none of its answers, and it is not timed fairly yet
        return [agreement, errors]
    return [agreement, _negative(stable, candidate, cfg), errors, _latency(stable, candidate, cfg)]


def evaluate(
    stage: Stage,
    elapsed_s: float,
    stable: Evidence,
    candidate: Evidence,
    cfg: RolloutSettings,
    referee: str = "teacher",
    share: float | None = None,
    held_s: float | None = None,
) -> Verdict:
    """What to do now, ``elapsed_s`` seconds into ``stage``: roll back on any failed check;
    advance once the stage time is up and every check passed (or ``max_stage_s`` is up and none
    failed, except a canary still missing required evidence: ``_hold``); else wait. ``share``:
    the canary's share now; ``held_s``: seconds since it last changed (default ``elapsed_s``)."""
    found = checks(stage, stable, candidate, cfg, referee)
    failed = [c.detail for c in found if c.state == "fail"]
    if failed:
        return Verdict("rollback", f"{stage}: " + "; ".join(failed), found)
    pending = [c.name for c in found if c.state == "pending"]
    stage_s = cfg.shadow_s if stage == "shadow" else cfg.canary_s
    if elapsed_s >= stage_s and not pending:
        return Verdict("advance", f"{stage}: every check passed after {elapsed_s:.0f}s", found)
    if elapsed_s >= cfg.max_stage_s:
        missing = [name for name in pending if name in cfg.required()]
        if stage == "canary" and missing and not cfg.timeout_promotes:
            return _hold(found, missing, share or cfg.canary_share, held_s, elapsed_s, cfg)
        unmeasured = ", ".join(pending)
        return Verdict(
            "advance",
            f"{stage}: no check failed in {elapsed_s:.0f}s (not enough evidence for {unmeasured})",
            found,
        )
    waiting = f"evidence for {', '.join(pending)}" if pending else f"{stage_s:.0f}s"
    return Verdict("wait", f"{stage}: {elapsed_s:.0f}s in, waiting for {waiting}", found)


def _hold(
    found: list[OnlineCheck],
    missing: list[str],
    share: float,
    held_s: float | None,
    elapsed_s: float,
    cfg: RolloutSettings,
) -> Verdict:
    """A canary past ``max_stage_s`` without the evidence ``missing`` checks need: widen its
    share each ``max_stage_s``, up to ``max_canary_share``; at the widest, wait ``max_hold_s``,
    then roll back. Never promoted on the timer."""
    held = elapsed_s if held_s is None else held_s
    need = ", ".join(missing)
    if share < cfg.max_canary_share and held >= cfg.max_stage_s:
        wider = min(cfg.max_canary_share, share * cfg.share_step)
        reason = (
            f"canary: no evidence for {need} after {elapsed_s:.0f}s at share {share:.2f}: "
            f"share raised to {wider:.2f}"
        )
        return Verdict("widen", reason, found, wider)
    if share >= cfg.max_canary_share and held >= cfg.max_hold_s:
        reason = (
            f"canary: still no evidence for {need} after {held:.0f}s at share {share:.2f} "
            f"(max_hold_s {cfg.max_hold_s:g}): not promoted on a timer"
        )
        return Verdict("rollback", reason, found)
    reason = (
        f"canary: held at share {share:.2f}, waiting for evidence for {need} "
        f"({elapsed_s:.0f}s in; an operator may promote by hand)"
    )
    return Verdict("wait", reason, found)


def teacher_evidence(labels: pd.DataFrame, version: int, shadow: bool) -> tuple[int, int]:
    """(labelled, agreed) for ``version`` among teacher-label rows: its served answers
    (``student_probs`` of rows with ``model_version``) or, for a shadow, its mirrored answers
    (``shadow_probs`` of rows with ``shadow_version``); a generate task's replies, served or a
    shadow's unseen ones, count as ``reply_agreement`` says."""
    version_col, probs_col, reply_col = "model_version", "student_probs", "student_reply"
    if shadow:
        version_col, probs_col, reply_col = "shadow_version", "shadow_probs", "shadow_reply"
    if labels.empty or version_col not in labels:
        return 0, 0
    rows = labels[labels[version_col] == version]
    if rows.empty:
        return 0, 0
    if {"reply", reply_col} <= set(rows) and rows["reply"].notna().all():
        return reply_agreement(rows, reply_col)
    mine = np.stack(rows[probs_col].to_list()).argmax(1)  # (N,)
    teacher = np.stack(rows["teacher_probs"].to_list()).argmax(1)  # (N,)
    return len(rows), int((mine == teacher).sum())


def reply_agreement(rows: pd.DataFrame, column: str = "student_reply") -> tuple[int, int]:
    """(labelled, agreed) for a generate task's replies: agreed is Σ chrF/100 of each reply in
    ``column`` (served: ``student_reply``; a shadow's unseen: ``shadow_reply``) against the
    teacher's (``training.chrf``, the gate's measure), rounded, so the share
    checks compare mean chrF. Their binomial standard error bounds that of a mean of scores in
    [0, 1] from above (Bhatia & Davis 2000: Var ≤ (1 − μ)μ), so the check errs towards waiting,
    not towards a rollback on noise."""
    students = [str(s) for s in rows[column].fillna("")]
    mean = mean_chrf(students, [str(t) for t in rows["reply"]])  # 0–100
    return len(rows), round(len(rows) * mean / 100)


def feedback_evidence(feedback: pd.DataFrame, version: int, bad_rating_max: int) -> tuple[int, int]:
    """(rated, negative) for ``version``: the latest rating per request on its answers."""
    if feedback.empty:
        return 0, 0
    rows = latest_ratings(feedback[feedback["model_version"] == version])
    return len(rows), int((rows["rating"] <= bad_rating_max).sum())
