"""The operator page (services/dashboard.html) in headless Chromium, fed a fixture payload.

A tiny threaded web server stands in for the app: the page at ``/dashboard``, the JSON at
``/v1/dashboard``. The page reports its render in ``<body data-state>`` (``tests.browser``).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitoring.dashboard import Dashboard
from tests.browser import (
    PageError,
    element_text,
    page_state,
    rendered_dom,
    screenshot,
    without_scripts,
)

PAGE = Path(__file__).resolve().parents[2] / "services" / "dashboard.html"
FIXTURE = Path(__file__).parent / "fixtures" / "dashboard.json"
EMPTY: dict[str, Any] = {
    "generated_at": 1764403200.0,
    "task": "sentiment",
    "labels": ["negative", "positive"],
    "current_version": None,
    "rollout": None,
    "rollout_verdict": None,
    "round_running": False,
    "round_progress": None,
    "last_error": None,
    "teacher": {
        "kind": "embedding",
        "teacher_id": "embedding:minilm:1",
        "state": "unknown",
        "last_error": None,
        "serving_version_learnt_from": {},
        "changed": False,
        "note": None,
        "old_labels": "keep",
    },
    "trust": None,
    "series": [],
    "versions": [],
    "rounds": [],
    "trigger": None,
    "drift": None,
    "reports": [],
    "events": [],
}


class Site(ThreadingHTTPServer):
    """The page, and what ``GET /v1/dashboard`` answers (status, body)."""

    daemon_threads = True
    answer: tuple[int, bytes] = (200, b"{}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dashboard"

    def serve(self, payload: Any, status: int = 200) -> str:
        """Answer ``payload`` (JSON, or raw bytes) from now on; the page's URL."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answer = (status, body)
        return self.url


class Handler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        if self.path == "/dashboard":
            self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
        elif self.path == "/v1/dashboard":
            status, body = self.server.answer
            self._send(status, "application/json", body)
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def fixture_payload() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return payload


def test_both_payloads_are_what_the_scheduler_sends(fixture_payload: dict[str, Any]) -> None:
    """The page is tested on payloads of the contract's shape (``monitoring.dashboard``)."""
    for payload in (fixture_payload, EMPTY):
        sent = Dashboard.model_validate(payload)
        assert json.loads(sent.model_dump_json()) == payload


def load(url: str) -> str:
    """The page's rendered DOM, without its script (whose source names what it renders)."""
    return without_scripts(rendered_dom(url))


def chart(dom: str, chart_id: str) -> str:
    """The markup of one chart's <figure>."""
    found = re.search(rf'<figure class="chart" id="{chart_id}">.*?</figure>', dom, re.S)
    assert found, f"no chart {chart_id}"
    return found.group(0)


def line_paths(markup: str) -> dict[str, str]:
    """Each plotted series' path data, by series name."""
    pattern = r'<g data-series="([^"]+)"><path class="line" d="([^"]+)"'
    return dict(re.findall(pattern, markup))


def test_the_fixture_renders_versions_rollout_rounds_and_charts(
    site: Site, fixture_payload: dict[str, Any]
) -> None:
    dom = load(site.serve(fixture_payload))
    assert page_state(dom) == "ready"
    assert element_text(dom, "current-version") == "v3"
    assert element_text(dom, "candidate") == "v6"
    assert element_text(dom, "stage") == "canary"
    assert element_text(dom, "paused") is None
    assert element_text(dom, "round") == "round running"
    verdict = element_text(dom, "verdict") or ""
    assert "teacher_agreement pass" in verdict
    assert "p99_latency pending" in verdict
    rounds = element_text(dom, "rounds") or ""
    for trigger in ("drift", "disagreement", "feedback", "schedule", "volume"):
        assert f" {trigger} " in rounds
    assert "rolled back" in rounds and "rejected" in rounds
    assert "failed 2/4 agreement 0.832 < 0.874 ; slice:short 0.79 < 0.83" in rounds
    assert '<span class="failing"><b class="mono">slice:short</b>' in dom
    assert "v2 retired" in (element_text(dom, "versions") or "")
    teacher = element_text(dom, "teacher") or ""
    assert "llm:qwen2.5-coder-0.5b:3f9a" in teacher and "down" in teacher, teacher
    assert "no answer in 30 s" in teacher and "v3 learnt from" in teacher, teacher


def test_charts_draw_one_line_per_series_broken_at_missing_points(
    site: Site, fixture_payload: dict[str, Any]
) -> None:
    dom = load(site.serve(fixture_payload))
    drift = line_paths(chart(dom, "chart-drift"))
    assert set(drift) == {"features", "embedding", "prediction"}
    assert all(d.count("M") == 2 for d in drift.values())  # one gap: the monitor was down
    disagreement = line_paths(chart(dom, "chart-disagreement"))["disagreement"]
    assert disagreement.count("M") == 2 and disagreement.count("L") == 120 - 3 - 2
    assert set(line_paths(chart(dom, "chart-feedback"))) == {"negative share", "mean rating"}
    assert set(line_paths(chart(dom, "chart-volume"))) == {"feedback/min", "labels/min"}
    assert chart(dom, "chart-drift").count('class="marker"') == 3  # rounds v4, v5, v6


def test_an_empty_payload_says_no_data_yet(site: Site) -> None:
    dom = load(site.serve(EMPTY))
    assert page_state(dom) == "ready"
    assert dom.count('<div class="empty">no data yet</div>') == 4  # one per chart
    assert 'class="line"' not in dom
    assert element_text(dom, "current-version") == "none yet"
    assert "no rollout in progress" in (element_text(dom, "verdict") or "")
    assert "no rounds yet" in (element_text(dom, "rounds") or "")


def test_text_from_the_json_is_never_markup(site: Site, fixture_payload: dict[str, Any]) -> None:
    hostile = copy.deepcopy(fixture_payload)
    hostile["task"] = '<img src=x onerror="document.title=1">'
    hostile["rounds"][0]["reason"] = "<script>document.title = 2</script>"
    hostile["reports"][0]["url"] = "javascript:alert(1)"
    dom = load(site.serve(hostile))
    assert "<img" not in dom
    assert "&lt;img src=x" in dom and "&lt;script&gt;document.title = 2" in dom
    assert "<title>distillery · dashboard</title>" in dom
    reports = re.search(r'<section id="reports">.*?</section>', dom, re.S)
    assert reports and "javascript" not in reports.group(0)
    assert reports.group(0).count("href=") == 2  # the unsafe link is dropped, its name stays


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b'{"detail": "boom"}', "error: GET /v1/dashboard: HTTP 500"),
        (200, b"null", "error: the dashboard answer is not a JSON object"),
    ],
)
def test_a_failed_fetch_or_bad_payload_is_an_error_state(
    site: Site, status: int, body: bytes, message: str
) -> None:
    url = site.serve(body, status)
    with pytest.raises(PageError, match="did not render"):
        rendered_dom(url)
    dom = rendered_dom(url, require_ready=False)
    assert page_state(dom).startswith(message)
    assert (element_text(dom, "banner") or "").startswith("Dashboard error:")


def test_a_full_page_screenshot_is_a_png(
    site: Site, fixture_payload: dict[str, Any], tmp_path: Path
) -> None:
    out = screenshot(site.serve(fixture_payload), tmp_path / "dashboard.png", width=1280)
    png = out.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and 1400 < height < 4000  # the whole page, measured before the shot
    assert len(png) > 50_000  # charts and tables, not a blank page


def test_the_trust_table_ranks_teacher_and_keys_and_marks_what_each_counts_as(
    site: Site, fixture_payload: dict[str, Any]
) -> None:
    def source(name: str, reliability: float, weight: float, **marks: bool) -> dict[str, Any]:
        return {
            "source": name, "reliability": reliability, "weight": weight, "agreements": 0,
            "comparisons": 50, "labels": 40, "trusted": False, "above_floor": False, **marks,
        }  # fmt: skip

    payload = copy.deepcopy(fixture_payload)
    payload["trust"] = {
        "mode": "measured",
        "teacher": source("teacher", 0.31, 0.0),
        "keys": [
            source("ops", 0.97, 1.0, trusted=True, above_floor=True),
            source("app", 0.9, 0.8, above_floor=True),
            source("liar", 0.04, 0.0),
        ],
    }
    text = element_text(load(site.serve(payload)), "trust") or ""
    assert text.index("teacher") < text.index("ops") < text.index("app") < text.index("liar")
    assert "0.31" in text and "trusted" in text and "reliable" in text and "ignored" in text
    assert "no trust estimate yet" in (element_text(load(site.serve(EMPTY)), "trust") or "")
