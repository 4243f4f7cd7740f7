"""Gate, rollout and rollback against the live loop (real Ray Serve, broker, labeler, store):

- a candidate trained on flipped labels is stopped by the gate;
- a candidate that passes the gate but answers one kind of live traffic wrongly is rolled back
  automatically during its canary, and no request fails meanwhile;
- the operator API (token-protected) pauses, resumes, promotes and rolls back.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from cli.launcher import Running
from distillery import vader
from distillery.contracts import RoundReport
from feedback.examples import count_labels_since
from tests.conftest import DATA
from tests.integration.conftest import send_until_labelled
from training.cycle import window_start
from training.registry import Registry

pytestmark = pytest.mark.integration
MARKERS = ("zorblax", "honestly,", "in short,", "note:")  # prefixes the gate's holdout never saw


RECENT = 60  # labels newer than the current version's window that this module trains on


def _registry(loop: Running) -> Registry:
    return Registry(loop.settings.paths.registry_dir)


@pytest.fixture(scope="module", autouse=True)
def recent_labels(loop: Running) -> None:
    """Movie reviews through the API until the store holds ``RECENT`` labels newer than the
    current version's window, so this module's candidates have rows to train on whatever ran
    before it (run alone, right after the bootstrap, the window held none)."""
    since = window_start(_registry(loop))
    if count_labels_since(loop.settings.paths.store_dir, since) >= RECENT:
        return
    texts = [row.text for row in vader.load("movies", DATA)[: 2 * RECENT]]
    send_until_labelled(loop, texts, since, RECENT, 180)


def _train(loop: Running, out: Path, corrupt: str, marker: str = MARKERS[0]) -> Path:
    """Fine-tune the current student in this process (Ray-free ``fit``) on the store's rows,
    corrupted on purpose: ``flip`` swaps the two labels' teacher logits on every row (permuting
    them across rows, as this test once did, keeps the label shares: on the shared loop's
    traffic, a few texts sent hundreds of times, such a candidate agreed with the teacher exactly
    as the current did, 0.928 both, and the gate rightly passed it); ``marker`` adds
    copies of the rows prefixed with ``marker`` and labelled negative whatever they say."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from training.cycle import round_data
    from training.round import fit

    registry = _registry(loop)
    data = round_data(loop.settings, loop.task, registry)
    frame = data.train.assign(correction=-1, kd_weight=1.0)
    if corrupt == "flip":
        logits = np.stack(frame["teacher_logits"].to_list())  # (N, C)
        frame["teacher_logits"] = list(logits[:, ::-1])
    elif corrupt == "marker":
        negative = [8.0, -8.0]  # (C,) logits: "negative" is index 0
        marked = frame.assign(
            text=[f"{marker} {t}" for t in frame["text"]], teacher_logits=[negative] * len(frame)
        )
        frame = pd.concat([frame, marked], ignore_index=True)
    current = registry.path(registry.current() or 1)
    model = BertForSequenceClassification.from_pretrained(current)
    tokenizer = AutoTokenizer.from_pretrained(current)
    config = {
        "epochs": 3, "learning_rate": 1e-3, "batch_size": 32, "seed": 0, "kd_temperature": 1.0,
        "kd_weight": 1.0, "correction_weight": 1.0, "max_tokens": 64,
    }  # fmt: skip
    fit(model, frame, tokenizer, config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _submit(loop: Running, path: Path, reason: str) -> dict[str, Any]:
    import ray

    report: RoundReport = ray.get(loop.scheduler.submit.remote(str(path), reason))
    return report


def _traffic(
    loop: Running, texts: list[str], seconds: float, feedback: bool = False
) -> Counter[str]:
    """Send ``texts`` round robin for ``seconds``; with ``feedback``, rate each answer as a user
    who knows the texts are positive. Returns the status codes seen."""
    codes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=loop.api_url, timeout=30) as client:
        i = 0
        while time.monotonic() < deadline:
            r = client.post("/v1/predict", json={"text": texts[i % len(texts)]})
            codes[str(r.status_code)] += 1
            i += 1
            if feedback and r.is_success:
                answer = r.json()["predictions"][0]
                body = {
                    "request_id": answer["request_id"],
                    "feedback_token": answer["feedback_token"],
                    "rating": 5 if answer["label"] == "positive" else 1,
                }
                codes["feedback " + str(client.post("/v1/feedback", json=body).status_code)] += 1
    return codes


POSITIVE = [
    f"{opening} {i}" for i in range(20)
    for opening in ("a wonderful, moving film", "I loved every minute of it", "truly great acting")
]  # fmt: skip


def test_a_candidate_trained_on_flipped_labels_is_stopped_by_the_gate(
    loop: Running, tmp_path: Path
) -> None:
    registry = _registry(loop)
    current = registry.current()
    report = _submit(loop, _train(loop, tmp_path / "flipped", "flip"), "test: flipped")
    assert report.gate is not None
    failed = report.gate.failed()
    assert report.outcome == "rejected", report
    assert "agreement" in failed, report.gate
    assert registry.current() == current and registry.rollout() is None
    assert registry.get(report.version).status == "rejected"
    last = registry.history()[-1]
    assert (last.event, last.version) == ("rejected", report.version)
    assert "agreement" in last.reason


def _wait_rollout_end(loop: Running, version: int, timeout_s: float = 120) -> None:
    registry = _registry(loop)
    deadline = time.monotonic() + timeout_s
    while registry.rollout() is not None:
        assert time.monotonic() < deadline, f"v{version} still rolling out: {registry.rollout()}"
        time.sleep(0.5)


def _reaches(loop: Running, stage: str, timeout_s: float = 60) -> bool:
    """True once the rollout is at ``stage``; False if it ended before."""
    registry = _registry(loop)
    deadline = time.monotonic() + timeout_s
    while (running := registry.rollout()) is not None and running.stage != stage:
        assert time.monotonic() < deadline, f"no {stage} after {timeout_s}s"
        time.sleep(0.5)
    return running is not None


def test_a_candidate_that_regresses_online_is_rolled_back_automatically(
    loop: Running, tmp_path: Path
) -> None:
    registry = _registry(loop)
    stable = registry.current()
    marker = _marker_the_stable_reads_right(loop)
    candidate = _train(loop, tmp_path / "marker", "marker", marker)
    report = _submit(loop, candidate, "test: regresses online")
    assert report.outcome == "shadow", report  # the gate saw nothing wrong
    version = report.version
    codes = _traffic(loop, POSITIVE, 4)  # ordinary traffic
    if _reaches(loop, "canary"):  # a stable strong on POSITIVE lets the shadow catch it first
        marked = [f"{marker} {text}" for text in POSITIVE]
        codes += _traffic(loop, marked, 45, feedback=True)  # the traffic it gets wrong
    _wait_rollout_end(loop, version)
    assert registry.current() == stable
    assert registry.get(version).status == "rolled_back"
    last = registry.history()[-1]
    assert (last.event, last.version) == ("rolled_back", version), last
    stage = last.reason.split(":")[1].strip()  # "automatic: <stage>: <the failed check>"
    assert last.reason.startswith("automatic:") and stage in ("shadow", "canary"), last
    assert "teacher_agreement" in last.reason or "negative_feedback" in last.reason
    assert {k for k in codes if not k.startswith("feedback")} == {"200"}, codes
    checks = registry.get(version).online[stage].checks
    assert any(c.state == "fail" for c in checks), checks


def _marker_the_stable_reads_right(loop: Running) -> str:
    """The prefix on whose positive texts the stable student answers positive most often (at
    least half), so that the regression is the candidate's alone. With "zorblax" only, one run's
    stable already answered those texts negative: teacher agreement 0.000 and negative feedback
    1.000 for both versions, and the canary was rightly promoted. Asked with
    ``allow_training: false``, so the probe never becomes training data."""
    shares = {}
    with httpx.Client(base_url=loop.api_url, timeout=60) as client:
        for marker in MARKERS:
            right = []
            for i in range(0, len(POSITIVE), 20):
                texts = [f"{marker} {t}" for t in POSITIVE[i : i + 20]]
                got = client.post("/v1/predict", json={"text": texts, "allow_training": False})
                right += [p["label"] == "positive" for p in got.json()["predictions"]]
            shares[marker] = float(np.mean(right))
    best = max(shares, key=lambda m: shares[m])
    assert shares[best] >= 0.5, f"the stable student answers the marked positive texts: {shares}"
    return best


def _admin(loop: Running, action: str, token: str | None, **body: Any) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{loop.api_url}/v1/admin/{action}", json=body, headers=headers, timeout=120)


def test_operators_pause_resume_promote_and_roll_back_through_the_admin_api(
    loop: Running, tmp_path: Path
) -> None:
    token = (loop.settings.paths.state_dir / "operator_token").read_text().strip()
    registry = _registry(loop)
    stable = registry.current()
    assert _admin(loop, "pause", None).status_code == 401
    assert _admin(loop, "pause", "not-the-token").status_code == 403
    assert _admin(loop, "explode", token).status_code == 404
    assert _admin(loop, "pause", token).status_code == 409  # no rollout to pause
    report = _submit(loop, _train(loop, tmp_path / "fine", "none"), "test: operators")
    assert report.outcome == "shadow", report
    version = report.version
    paused = _admin(loop, "pause", token, reason="looking into it")
    assert paused.status_code == 200, paused.text
    time.sleep(loop.settings.rollout.max_stage_s + 3)  # paused: nothing moves
    running = registry.rollout()
    assert running is not None and running.stage == "shadow" and running.paused
    assert _admin(loop, "resume", token).status_code == 200
    promoted = _admin(loop, "promote", token, reason="looks good")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["current_version"] == version
    assert httpx.get(f"{loop.api_url}/readyz", timeout=10).json()["model_version"] == version
    back = _admin(loop, "rollback", token, reason="changed my mind")
    assert back.status_code == 200, back.text
    assert registry.current() == stable
    events = [
        (e.event, e.reason)
        for e in registry.history()
        if e.version == version and e.event != "canary"  # it may have got there on its own
    ]
    assert [e for e, _ in events] == [
        "registered", "shadow", "paused", "resumed", "promoted", "rolled_back",
    ]  # fmt: skip
    assert events[2][1] == "operator (API): looking into it"
