"""The rollout state machine: ``evaluate`` on hand-built evidence, routing, store evidence."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from distillery.contracts import Evidence
from distillery.settings import RolloutSettings
from training.chrf import chrf
from training.rollout import (
    Verdict,
    checks,
    evaluate,
    feedback_evidence,
    reply_agreement,
    takes_candidate,
    teacher_evidence,
)

CFG = RolloutSettings(
    shadow_s=10,
    canary_s=20,
    max_stage_s=100,
    min_requests=10,
    min_labels=10,
    min_feedback=5,
    max_agreement_drop=0.05,
    max_negative_feedback_rise=0.10,
    max_error_rate_rise=0.01,
    max_p99_ratio=1.5,
    p99_slack_ms=20.0,
    confidence_z=0.0,  # point values: the limits below are exact
)
# every check has its evidence and the candidate equals the stable version
GOOD = Evidence(requests=100, errors=0, p99_ms=50.0, labelled=20, agreed=18, rated=10, negative=1)


def _states(verdict: Verdict) -> dict[str, str]:
    return {c.name: c.state for c in verdict.checks}


def test_agreement_drop_beyond_limit_rolls_back_naming_values() -> None:
    worse = replace(GOOD, agreed=16)  # 0.80 against 0.90, limit 0.85 (Agresti–Caffo: 0.845)
    verdict = evaluate("shadow", 5, GOOD, worse, CFG)
    assert verdict.action == "rollback"
    assert verdict.reason == "shadow: teacher_agreement 0.800 < 0.845 (stable 0.900)"
    check = next(c for c in verdict.checks if c.name == "teacher_agreement")
    assert (check.state, check.candidate, check.stable) == ("fail", 0.8, 0.9)
    assert check.limit == pytest.approx(0.845)
    assert evaluate("shadow", 5, GOOD, replace(GOOD, agreed=17), CFG).action == "wait"


def test_with_people_as_referee_teacher_agreement_is_skipped_not_failed() -> None:
    """A candidate that learnt from people where the teacher is wrong disagrees with it."""
    against_teacher = replace(GOOD, agreed=2)  # 0.10 against 0.90: far below the limit
    verdict = evaluate("shadow", 100, GOOD, against_teacher, CFG, referee="human")
    assert _states(verdict)["teacher_agreement"] == "skipped"
    assert verdict.action == "advance", verdict.reason
    canary = evaluate("canary", 5, GOOD, replace(against_teacher, negative=9), CFG, "human")
    assert (
        canary.action == "rollback" and "negative_feedback" in canary.reason
    )  # people still judge


def test_agreement_drop_is_pending_until_both_versions_have_min_labels() -> None:
    few = replace(GOOD, labelled=9, agreed=0)  # terrible, but below min_labels
    for stable, cand in ((GOOD, few), (few, GOOD)):
        verdict = evaluate("shadow", 50, stable, cand, CFG)
        assert verdict.action == "wait"
        assert _states(verdict)["teacher_agreement"] == "pending"
        assert verdict.reason == "shadow: 50s in, waiting for evidence for teacher_agreement"


def test_pending_requests_keep_error_and_latency_checks_waiting() -> None:
    verdict = evaluate("shadow", 50, GOOD, replace(GOOD, requests=9, errors=9), CFG)
    assert verdict.action == "wait"
    assert _states(verdict) == {"teacher_agreement": "pass", "error_rate": "pending"}
    canary = evaluate("canary", 50, GOOD, replace(GOOD, requests=9, errors=9), CFG)
    assert _states(canary)["p99_latency"] == "pending"


def test_a_shadow_is_never_judged_on_latency() -> None:
    slow = replace(GOOD, p99_ms=5_000.0)  # it waits behind the stable forward on each replica
    assert evaluate("shadow", 10, GOOD, slow, CFG).action == "advance"
    assert evaluate("canary", 20, GOOD, slow, CFG).action == "rollback"
    no_p99 = evaluate("canary", 50, GOOD, replace(GOOD, p99_ms=None), CFG)
    assert _states(no_p99)["p99_latency"] == "pending"


def test_advances_once_stage_time_is_up_and_every_check_passed() -> None:
    early = evaluate("shadow", 9.9, GOOD, GOOD, CFG)
    assert early.action == "wait"
    assert early.reason == "shadow: 10s in, waiting for 10s"
    verdict = evaluate("shadow", 10, GOOD, GOOD, CFG)
    assert verdict.action == "advance"
    assert verdict.reason == "shadow: every check passed after 10s"
    assert set(_states(verdict).values()) == {"pass"}
    assert evaluate("canary", 19, GOOD, GOOD, CFG).action == "wait"  # canary_s, not shadow_s
    assert evaluate("canary", 20, GOOD, GOOD, CFG).action == "advance"


def test_max_stage_s_advances_a_shadow_without_evidence_and_names_unmeasured_checks() -> None:
    quiet = Evidence()
    assert evaluate("shadow", 99, quiet, quiet, CFG).action == "wait"
    verdict = evaluate("shadow", 100, quiet, quiet, CFG)
    assert verdict.action == "advance"  # into canary: users are not all on it yet
    assert verdict.reason == (
        "shadow: no check failed in 100s (not enough evidence for teacher_agreement, error_rate)"
    )
    partly = evaluate("shadow", 100, GOOD, replace(GOOD, labelled=0, agreed=0), CFG)
    assert partly.action == "advance"
    assert partly.reason.endswith("(not enough evidence for teacher_agreement)")


def test_a_canary_without_required_evidence_is_held_and_widened_never_promoted() -> None:
    quiet = Evidence()
    held = evaluate("canary", 100, quiet, quiet, CFG, held_s=100)
    assert held.action == "widen" and held.share == pytest.approx(0.2)  # 0.1 × share_step 2
    assert held.reason == (
        "canary: no evidence for teacher_agreement, error_rate, p99_latency after 100s at "
        "share 0.10: share raised to 0.20"
    )
    # just widened: held there until another max_stage_s passes
    waiting = evaluate("canary", 150, quiet, quiet, CFG, share=0.2, held_s=50)
    assert waiting.action == "wait"
    assert waiting.reason == (
        "canary: held at share 0.20, waiting for evidence for teacher_agreement, error_rate, "
        "p99_latency (150s in; an operator may promote by hand)"
    )
    assert evaluate("canary", 200, quiet, quiet, CFG, share=0.4, held_s=100).share == 0.5  # cap
    widest = evaluate("canary", 10_000, quiet, quiet, CFG, share=0.5, held_s=3_599)
    assert widest.action == "wait"
    gone = evaluate("canary", 10_000, quiet, quiet, CFG, share=0.5, held_s=3_600)
    assert gone.action == "rollback" and "not promoted on a timer" in gone.reason


def test_a_canary_missing_only_optional_evidence_advances_naming_it() -> None:
    unrated = replace(GOOD, rated=0, negative=0)  # nobody rated: feedback is optional
    verdict = evaluate("canary", 100, unrated, unrated, CFG)
    assert verdict.action == "advance"
    assert verdict.reason.endswith("(not enough evidence for negative_feedback)")
    assert evaluate("canary", 99, unrated, unrated, CFG).action == "wait"


def test_timeout_promotes_restores_promotion_on_the_timer() -> None:
    quiet = Evidence()
    timer = CFG.model_copy(update={"timeout_promotes": True})
    assert evaluate("canary", 100, quiet, quiet, timer).action == "advance"
    human = evaluate("canary", 100, GOOD, replace(GOOD, labelled=0, agreed=0), CFG, "human")
    assert human.action == "advance"  # a skipped check is not missing evidence


def test_rollout_settings_name_an_unknown_required_check_and_a_narrow_cap() -> None:
    with pytest.raises(ValidationError, match="'agreement'"):
        RolloutSettings(required_checks="error_rate,agreement")
    with pytest.raises(ValidationError, match=r"max_canary_share=0\.05"):
        RolloutSettings(max_canary_share=0.05)
    assert RolloutSettings(required_checks="").required() == set()


def test_failure_rolls_back_even_after_max_stage_s() -> None:
    verdict = evaluate("shadow", 1_000, GOOD, replace(GOOD, agreed=0), CFG)
    assert verdict.action == "rollback"


def test_negative_feedback_is_checked_only_in_canary() -> None:
    bad = replace(GOOD, negative=8)  # 0.8 against 0.1, limit 0.2 (Agresti–Caffo: 0.22)
    shadow = evaluate("shadow", 10, GOOD, bad, CFG)
    assert "negative_feedback" not in _states(shadow)
    assert shadow.action == "advance"
    canary = evaluate("canary", 10, GOOD, bad, CFG)
    assert canary.action == "rollback"
    assert canary.reason == "canary: negative_feedback 0.800 > 0.220 (stable 0.100)"
    few = evaluate("canary", 20, GOOD, replace(bad, rated=4), CFG)
    assert (few.action, _states(few)["negative_feedback"]) == ("wait", "pending")


def test_error_rate_rise_beyond_limit_rolls_back() -> None:
    stable = replace(GOOD, errors=1)  # 0.01, limit 0.02 (Agresti–Caffo: 0.0202)
    assert evaluate("shadow", 10, stable, replace(GOOD, errors=2), CFG).action == "advance"
    verdict = evaluate("shadow", 10, stable, replace(GOOD, errors=3), CFG)
    assert verdict.action == "rollback"
    assert verdict.reason == "shadow: error_rate 0.0300 > 0.0202 (stable 0.0100)"


@pytest.mark.parametrize(
    ("stable_ms", "limit", "ok_ms", "bad_ms"),
    [
        (100.0, 150.0, 150.0, 150.5),  # the ratio is the larger: 100 * 1.5
        (10.0, 30.0, 29.0, 30.5),  # the slack is the larger: 10 + 20 (the ratio alone: 15)
    ],
)
def test_p99_limit_is_the_larger_of_ratio_and_slack(
    stable_ms: float, limit: float, ok_ms: float, bad_ms: float
) -> None:
    stable = replace(GOOD, p99_ms=stable_ms)
    ok = evaluate("canary", 20, stable, replace(GOOD, p99_ms=ok_ms), CFG)
    assert ok.action == "advance"
    check = next(c for c in ok.checks if c.name == "p99_latency")
    assert (check.state, check.limit) == ("pass", limit)
    bad = evaluate("canary", 20, stable, replace(GOOD, p99_ms=bad_ms), CFG)
    assert bad.action == "rollback"
    assert f"p99_latency {bad_ms:.1f} ms > {limit:.1f} ms" in bad.reason


def test_every_failure_is_listed() -> None:
    bad = replace(GOOD, agreed=0, negative=10, errors=50, p99_ms=500.0)
    verdict = evaluate("canary", 1, GOOD, bad, CFG)
    assert verdict.action == "rollback"
    assert verdict.reason.startswith("canary: ")
    parts = verdict.reason.removeprefix("canary: ").split("; ")
    assert [p.split(" ")[0] for p in parts] == [
        "teacher_agreement",
        "negative_feedback",
        "error_rate",
        "p99_latency",
    ]
    assert verdict.to_dict()["checks"][0]["state"] == "fail"


def test_settings_refuse_a_stage_longer_than_max_stage_s() -> None:
    with pytest.raises(ValidationError, match="max_stage_s"):
        RolloutSettings(shadow_s=30, canary_s=301, max_stage_s=300)
    with pytest.raises(ValidationError, match="max_stage_s"):
        RolloutSettings(shadow_s=50, canary_s=10, max_stage_s=40)
    assert RolloutSettings(shadow_s=40, canary_s=40, max_stage_s=40).max_stage_s == 40


def test_takes_candidate_is_sticky_per_key_and_rollout() -> None:
    first = [takes_candidate(0.5, "r1", f"client-{i}") for i in range(200)]
    again = [takes_candidate(0.5, "r1", f"client-{i}") for i in range(200)]
    assert first == again
    assert 0 < sum(first) < 200


def test_takes_candidate_share_over_many_keys() -> None:
    keys = [f"client-{i}" for i in range(5_000)]
    chosen = {k for k in keys if takes_candidate(0.1, "r1", k)}
    assert abs(len(chosen) / len(keys) - 0.1) <= 0.02
    other = {k for k in keys if takes_candidate(0.1, "r2", k)}
    assert abs(len(other) / len(keys) - 0.1) <= 0.02
    assert chosen != other
    assert len(chosen & other) < len(chosen) / 2  # reshuffled, not shifted slightly


def test_takes_candidate_without_key_is_a_coin_flip_with_share() -> None:
    state = random.getstate()
    try:
        random.seed(1234)
        draws = [takes_candidate(0.3, "r1", None) for _ in range(5_000)]
    finally:
        random.setstate(state)
    assert abs(sum(draws) / len(draws) - 0.3) <= 0.02


def _p(label: int) -> list[float]:
    return list(np.eye(3)[label])


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model_version": [1, 1, 1, 2, 2],
            "student_probs": [_p(0), _p(1), _p(2), _p(0), _p(0)],
            "teacher_probs": [_p(0), _p(1), _p(0), _p(0), _p(1)],
            "shadow_version": [2.0, 2.0, 2.0, np.nan, np.nan],
            "shadow_probs": [_p(0), _p(2), _p(0), None, None],
        }
    )


def test_teacher_evidence_counts_served_answers() -> None:
    labels = _labels()
    assert teacher_evidence(labels, 1, shadow=False) == (3, 2)
    assert teacher_evidence(labels, 2, shadow=False) == (2, 1)
    assert teacher_evidence(labels, 3, shadow=False) == (0, 0)


def test_teacher_evidence_for_a_shadow_uses_the_mirrored_answers() -> None:
    labels = _labels()
    assert teacher_evidence(labels, 2, shadow=True) == (3, 2)  # rows 0, 1, 2: 0 ✓, 2 ✗, 0 ✓
    assert teacher_evidence(labels, 1, shadow=True) == (0, 0)


def test_teacher_evidence_without_shadow_columns_or_rows_is_zero() -> None:
    plain = _labels().drop(columns=["shadow_version", "shadow_probs"])
    assert teacher_evidence(plain, 2, shadow=True) == (0, 0)
    assert teacher_evidence(plain, 1, shadow=False) == (3, 2)
    empty = _labels().iloc[:0]
    assert teacher_evidence(empty, 1, shadow=False) == (0, 0)
    assert teacher_evidence(pd.DataFrame(), 1, shadow=True) == (0, 0)


def test_a_generate_shadow_is_judged_on_its_unseen_replies_and_the_stable_on_its_own() -> None:
    """On mirrored chats the teacher's one reply judges both: the candidate's ``shadow_reply``
    and the stable version's served ``student_reply``."""
    teacher = [
        "We're sorry it broke; a replacement is on its way.",
        "Thank you for the kind words!",
    ]
    labels = pd.DataFrame(
        {
            "model_version": [1, 1],
            "reply": teacher,
            "student_reply": ["Ok.", "Hello there."],
            "shadow_version": [2, 2],
            "shadow_reply": teacher,  # the candidate says what the teacher says
            "student_probs": [[], []],
            "shadow_probs": [None, None],
        }
    )
    assert teacher_evidence(labels, 2, shadow=True) == (2, 2)  # chrF 100 on both
    labelled, agreed = teacher_evidence(labels, 1, shadow=False)
    assert labelled == 2 and agreed == 0  # chrF near 0 on both
    assert teacher_evidence(labels, 1, shadow=True) == (0, 0)


def test_feedback_evidence_keeps_the_latest_rating_per_request() -> None:
    feedback = pd.DataFrame(
        {
            "model_version": [2, 2, 2, 2, 1, 2],
            "request_id": ["a", "a", "b", "c", "d", "b"],
            "rating": [5, 1, 1, 2, 1, 5],
            "ts": [20.0, 10.0, 1.0, 3.0, 1.0, 2.0],
        }
    )
    # a: latest (ts 20) is 5; b: latest (ts 2) is 5; c: 2 is bad
    assert feedback_evidence(feedback, 2, bad_rating_max=2) == (3, 1)
    assert feedback_evidence(feedback, 2, bad_rating_max=1) == (3, 0)
    assert feedback_evidence(feedback, 1, bad_rating_max=2) == (1, 1)
    assert feedback_evidence(feedback, 9, bad_rating_max=2) == (0, 0)
    assert feedback_evidence(feedback.iloc[:0], 2, bad_rating_max=2) == (0, 0)
    assert feedback_evidence(pd.DataFrame(), 2, bad_rating_max=2) == (0, 0)


def test_a_zero_agreement_drop_allows_equal_agreement_and_nothing_less() -> None:
    strict = CFG.model_copy(update={"max_agreement_drop": 0.0})
    stable = Evidence(labelled=100, agreed=90)
    assert checks("shadow", stable, Evidence(labelled=100, agreed=90), strict)[0].state == "pass"
    lower = checks("shadow", stable, Evidence(labelled=100, agreed=89), strict)[0]
    assert lower.state == "fail" and lower.detail.startswith("teacher_agreement 0.890 < 0.900")


def test_with_a_confidence_z_a_small_noisy_drop_waits_for_more_evidence() -> None:
    noisy = CFG.model_copy(update={"confidence_z": 1.64})
    stable = Evidence(labelled=24, agreed=23)  # .958
    few = evaluate("canary", 1, stable, Evidence(labelled=20, agreed=17), noisy)  # .85
    check = next(c for c in few.checks if c.name == "teacher_agreement")
    assert check.state == "pass" and check.limit is not None and check.limit < 0.85
    many = evaluate(
        "canary", 1, Evidence(labelled=600, agreed=575), Evidence(labelled=600, agreed=510), noisy
    )
    assert many.action == "rollback" and "teacher_agreement 0.850 <" in many.reason


def test_a_stable_share_of_zero_still_has_an_error_bar() -> None:
    """Wald's error of 0/9 is zero: 4 negative ratings of 9 rolled back a better candidate."""
    noisy = CFG.model_copy(update={"confidence_z": 1.64, "max_negative_feedback_rise": 0.10})
    stable = replace(GOOD, rated=9, negative=0)
    unlucky = evaluate("canary", 1, stable, replace(GOOD, rated=9, negative=4), noisy)
    assert _states(unlucky)["negative_feedback"] == "pass"
    bad = evaluate("canary", 1, stable, replace(GOOD, rated=9, negative=8), noisy)
    assert bad.action == "rollback" and "negative_feedback 0.889 >" in bad.reason


def test_a_generate_tasks_served_replies_agree_by_their_chrf_with_the_teachers() -> None:
    teacher = ["We are sorry, a refund is on its way.", "Thanks for the kind words!", "Sorry."]
    student = ["We are sorry, a refund is on its way.", "Thanks!", "What a lovely day at sea."]
    labels = pd.DataFrame({
        "model_version": [2, 2, 2, 1], "student_probs": [[], [], [], []],
        "teacher_probs": [[], [], [], []], "reply": [*teacher, "Sorry."],
        "student_reply": [*student, "Sorry."],
    })  # fmt: skip
    mean = sum(chrf(s, t) for s, t in zip(student, teacher, strict=True)) / 300
    assert 0.2 < mean < 0.8  # one exact, one partial, one unrelated
    assert teacher_evidence(labels, 2, shadow=False) == (3, round(3 * mean))
    assert teacher_evidence(labels, 1, shadow=False) == (1, 1)  # an exact reply agrees fully
    assert reply_agreement(labels.iloc[:1]) == (1, 1)
    assert reply_agreement(labels.iloc[2:3]) == (1, 0)
