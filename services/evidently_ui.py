"""Evidently's own UI (``evidently ui``) over the drift checks' workspace, on a loopback port.

Started by ``distillery up`` beside the API (``monitor.ui``) and stopped with it, in the manner
of the local LLM server (``services/child.py``: its log in ``state/logs``, killed by the kernel
if ``up`` dies first). Its assets are bundled in the wheel, so the page needs nothing from
outside; its anonymous usage reporting is switched off (``DO_NOT_TRACK``), so the server sends
nothing out either. It watches the workspace folder, so the snapshots the scheduler writes there
show up while it runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from services.broker import free_port
from services.child import Child


def evidently_command() -> str:
    """The ``evidently`` command of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "evidently"
    if beside.is_file():
        return str(beside)
    found = shutil.which("evidently")
    if found is None:
        raise FileNotFoundError("no `evidently` command beside this Python nor on PATH")
    return found


class EvidentlyUI:
    """One ``evidently ui`` process. ``start()`` launches it, ``wait_ready()`` waits until it
    answers (so ``up`` can start Ray meanwhile); use as a context manager to do both."""

    def __init__(
        self,
        workspace: Path,
        port: int | None = None,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.workspace = workspace
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        self.child: Child | None = None
        self._started = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            evidently_command(), "ui", "--workspace", str(self.workspace),
            "--host", self.host, "--port", str(self.port),
        ]  # fmt: skip

    def start(self) -> EvidentlyUI:
        """Launch the process (the workspace folder is created if missing); returns at once."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DO_NOT_TRACK": "1"}
        self.child = Child(self.command(), self.log_path, env)
        self.child.start()
        self._started = time.monotonic()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Wait until ``GET /api/version`` answers; returns the seconds since ``start``. On exit
        or timeout the process is stopped and RuntimeError / TimeoutError names its log."""
        if self.child is None:
            raise RuntimeError("EvidentlyUI.wait_ready() before start()")
        self.child.wait_http(f"{self.url}/api/version", timeout_s, "evidently ui")
        return time.monotonic() - self._started

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout_s=10)

    def __enter__(self) -> EvidentlyUI:
        self.start().wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
