"""A small fault-injecting HTTP proxy for the teacher tests: it forwards to a real
OpenAI-compatible server, except that each chat completion takes the next fault queued, if any:

- ``"429"``: 429 Too Many Requests with ``Retry-After: 1``;
- ``"slow:S"``: waits S seconds, then forwards (past the client's timeout: a timeout);
- ``"garbage"``: 200 with a well-formed completion whose answer names no label;
- ``"html"``: 200 with an HTML body (not JSON at all);
- ``"500"``: 500 Internal Server Error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

GARBAGE = {
    "choices": [
        {
            "message": {"role": "assistant", "content": "banana"},
            "logprobs": {
                "content": [
                    {
                        "token": "banana",
                        "logprob": -0.1,
                        "top_logprobs": [
                            {"token": "banana", "logprob": -0.1},
                            {"token": "apple", "logprob": -2.5},
                        ],
                    }
                ]
            },
        }
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 1},
}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: deque[str] = deque()
        self.served: list[str] = []  # what each chat completion got: a fault or "ok"
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                response = httpx.get(proxy.upstream + self.path, timeout=30)
                self._reply(response.status_code, response.content, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fault = proxy.next_fault() if self.path.endswith("/chat/completions") else None
                if fault == "429":
                    self._reply(429, b'{"error": "slow down"}', {"Retry-After": "1"})
                    return
                if fault == "500":
                    self._reply(500, b'{"error": "boom"}', {})
                    return
                if fault == "garbage":
                    self._reply(200, json.dumps(GARBAGE).encode(), {})
                    return
                if fault == "html":
                    self._reply(200, b"<html><body>Bad gateway page</body></html>", {})
                    return
                if fault is not None and fault.startswith("slow:"):
                    time.sleep(float(fault.split(":")[1]))
                response = httpx.post(
                    proxy.upstream + self.path,
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=120,
                )
                self._reply(response.status_code, response.content, {})

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def next_fault(self) -> str | None:
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            self.served.append(fault or "ok")
            return fault

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
