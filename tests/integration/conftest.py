"""The running loop the modules share (``loop``), the slot every module's loop goes through
(``loop_slot``), and traffic sent through a loop's API until the teacher has labelled it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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


class LoopSlot:
    """This test process's one loop. Its Ray actors have fixed names in one namespace and its
    Serve app one HTTP port, so two loops (or a loop and another module's Ray stack) cannot run
    at once. A module that starts its own calls ``release`` first, which stops the shared loop if
    it is up; the shared loop (``shared``) is kept from module to module unless one spoiled it
    (``spoil``: the chaos kills), and the next module that wants it then gets a fresh one. So a
    module runs alone, or after any other, whatever the order."""

    def __init__(self, start: Callable[[], Running]) -> None:
        self._start = start
        self._running: Running | None = None
        self._spoiled = False

    def shared(self) -> Running:
        if self._running is None or self._spoiled:
            self.release()
            self._running, self._spoiled = self._start(), False
        return self._running

    def spoil(self) -> None:
        self._spoiled = True

    def release(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None


@pytest.fixture(scope="package")
def loop_slot(tmp_path_factory: pytest.TempPathFactory, vader_ready: Path) -> Iterator[LoopSlot]:
    slot = LoopSlot(lambda: _shared_loop(tmp_path_factory))
    yield slot
    slot.release()


@pytest.fixture(scope="module")
def loop(loop_slot: LoopSlot) -> Running:
    """The shared loop: started by the first module that asks for it, kept for the next."""
    return loop_slot.shared()


def _shared_loop(tmp_path_factory: pytest.TempPathFactory) -> Running:
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
    return up(settings)


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
