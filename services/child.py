"""A child process tied to this one, as the embedded broker and the local LLM server run: its
output appended to a log file (or dropped), ``PR_SET_PDEATHSIG`` so the kernel sends it SIGTERM
if the process that started it dies (no orphans), stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import time
from pathlib import Path


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    def __init__(
        self, command: list[str], log_path: Path | None, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=die_with_parent,
        )

    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive() and self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def wait_http(self, url: str, timeout_s: float, what: str, hint: str = "") -> None:
        """Until ``GET url`` answers 200. If the process exits first: RuntimeError with its exit
        code, log and ``hint``; if time runs out: the process is stopped, then TimeoutError."""
        import httpx

        deadline = time.monotonic() + timeout_s
        where = f"; its log: {self.log_path}" if self.log_path else ""
        while time.monotonic() < deadline:
            if (code := self.exit_code()) is not None:
                raise RuntimeError(f"{what} exited with code {code}{where}{hint}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"{what} did not answer on {url} in {timeout_s}s{where}")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
