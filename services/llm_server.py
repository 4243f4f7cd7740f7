"""The local teacher LLM: llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server``, built from its sdist by ``make llm``) on the pinned GGUF, on a free loopback
port. Started like the embedded broker: by ``distillery up`` when the teacher is an LLM and no
``DISTILLERY_TEACHER_URL`` is set, and stopped with it (and by the kernel if ``up`` dies first).
"""

from __future__ import annotations

import sys
from pathlib import Path

from models.gguf import GGUF_MODEL_ID
from services.broker import free_port
from services.child import Child


class LocalLLM:
    """One llama.cpp server process. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        gguf: Path,
        threads: int = 1,
        ctx: int = 2048,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.gguf = gguf
        self.threads = threads
        self.ctx = ctx
        self.port = port or free_port()
        self.log_path = log_path
        self.child = Child(self.command(), log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.gguf), "--model_alias", GGUF_MODEL_ID,
            "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
            "--n_ctx", str(self.ctx), "--host", "127.0.0.1", "--port", str(self.port),
            # one request at a time, in turn: by default a second streamed request cuts the
            # first short (measured: 8 concurrent streams got 12.5 chrF of their whole replies)
            "--interrupt_requests", "false",
        ]  # fmt: skip

    def start(self, timeout_s: float = 120.0) -> LocalLLM:
        """Start the server and wait until ``GET /v1/models`` answers."""
        if not self.gguf.is_file():
            raise FileNotFoundError(f"local teacher weights {self.gguf} missing: run `make llm`")
        self.child.start()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        self.child.wait_http(
            f"{self.url}/v1/models", timeout_s, "local LLM server",
            " (is llama-cpp-python[server] installed? `make llm`)",
        )  # fmt: skip

    def alive(self) -> bool:
        return self.child.alive()

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests)."""
        self.child.kill()

    def stop(self) -> None:
        self.child.stop(timeout_s=10)

    def __enter__(self) -> LocalLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
