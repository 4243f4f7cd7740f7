"""The running loop, shared by test_loop.py and test_rollout.py (started once for both), and
traffic sent through a loop's API until the teacher has labelled it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.launcher import Running, up
from distillery.settings import (
    CascadeSettings,
    GateSettings,
    MonitorSettings,
    PathSettings,
    RolloutSettings,
    SchedulerSettings,
    ServeSettings,
    Settings,
    TrainSettings,
)
from feedback.examples import count_labels_since
from services.broker import free_port
from tests.conftest import DATA, TASK


@pytest.fixture(scope="package")
def loop(tmp_path_factory: pytest.TempPathFactory, vader_ready: Path) -> Iterator[Running]:
    state = tmp_path_factory.mktemp("state")
    settings = Settings(
        paths=PathSettings(state_dir=state, data_dir=DATA, task_file=TASK),
        serve=ServeSettings(port=free_port(), metrics_export_port=free_port(), sample_rate=1.0),
        cascade=CascadeSettings(per_min=120, timeout_ms=5_000),
        scheduler=SchedulerSettings(enabled=False, seed_size=300, drift_every_s=5, poll_s=1),
        monitor=MonitorSettings(min_rows=30, html_every=1, signal_window_s=3_600),
        train=TrainSettings(epochs=2, scratch_epochs=3),
        gate=GateSettings(
            agreement_margin=0.15,
            correction_margin=1.0,
            slice_margin=1.0,
            ece_margin=1.0,
            latency_ratio=5.0,
            min_holdout=5,
            first_version_min_agreement=0,
        ),
        rollout=RolloutSettings(
            shadow_s=5,
            canary_s=8,
            max_stage_s=20,
            canary_share=0.5,
            min_requests=20,
            min_labels=10,
            min_feedback=5,
            report_s=1,
        ),
    )
    running = up(settings)
    yield running
    running.stop()


def send_until_labelled(
    running: Running, texts: list[str], since_ts: float, need: int, timeout_s: float
) -> None:
    """Send ``texts`` through the API as traffic, 16 a request, then wait until the store holds
    ``need`` labels newer than ``since_ts``."""
    with httpx.Client(base_url=running.api_url, timeout=60) as client:
        for i in range(0, len(texts), 16):
            client.post("/v1/predict", json={"text": texts[i : i + 16]}).raise_for_status()
    store, deadline = running.settings.paths.store_dir, time.monotonic() + timeout_s
    while count_labels_since(store, since_ts) < need and time.monotonic() < deadline:
        time.sleep(1)
    have = count_labels_since(store, since_ts)
    assert have >= need, f"the teacher labelled {have} of {need} texts in {timeout_s:.0f} s"
