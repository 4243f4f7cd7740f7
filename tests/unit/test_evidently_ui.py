"""The ``evidently ui`` child process and how ``distillery up`` treats it, on stand-in commands
(the real UI, in Chromium, is ``tests/integration/test_evidently_ui.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli.launcher import evidently_ui_ready, start_evidently_ui
from distillery.settings import MonitorSettings, PathSettings, Settings
from services.broker import free_port
from services.evidently_ui import EvidentlyUI, evidently_command


def _ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> EvidentlyUI:
    ui = EvidentlyUI(tmp_path / "evidently", port=free_port(), log_path=tmp_path / "ui.log")
    monkeypatch.setattr(ui, "command", lambda: ["sh", "-c", script])
    return ui


def test_the_command_serves_the_workspace_on_loopback(tmp_path: Path) -> None:
    ui = EvidentlyUI(tmp_path / "evidently", port=8123)
    assert ui.command() == [
        evidently_command(), "ui", "--workspace", str(tmp_path / "evidently"),
        "--host", "127.0.0.1", "--port", "8123",
    ]  # fmt: skip
    assert Path(evidently_command()).is_file() and ui.url == "http://127.0.0.1:8123"


def test_it_runs_with_usage_reporting_off_in_a_created_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ui = _ui(tmp_path, monkeypatch, 'echo "DO_NOT_TRACK=$DO_NOT_TRACK"; exit 3')
    ui.start()
    with pytest.raises(RuntimeError, match=r"exited with code 3; its log: .*ui\.log"):
        ui.wait_ready(timeout_s=10)
    assert "DO_NOT_TRACK=1" in (tmp_path / "ui.log").read_text()
    assert (tmp_path / "evidently").is_dir()


def test_a_ui_that_never_answers_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ui = _ui(tmp_path, monkeypatch, "exec sleep 60").start()
    with pytest.raises(
        TimeoutError, match=f"did not answer on {re.escape(ui.url)}/api/version in 0.5s"
    ):
        ui.wait_ready(timeout_s=0.5)
    assert not ui.alive()


def test_up_goes_on_without_a_ui_that_fails_and_can_leave_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        paths=PathSettings(state_dir=tmp_path), monitor=MonitorSettings(ui_start_timeout_s=5)
    )
    said: list[str] = []
    failing = _ui(tmp_path, monkeypatch, "exit 2").start()
    assert evidently_ui_ready(failing, settings, said.append) is None
    assert said == [f"Evidently UI did not start, going on without it: evidently ui exited with "
                    f"code 2; its log: {tmp_path / 'ui.log'}"]  # fmt: skip
    off = settings.model_copy(update={"monitor": MonitorSettings(ui=False)})
    assert start_evidently_ui(off, said.append) is None and len(said) == 1
