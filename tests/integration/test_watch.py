"""The real Prometheus scraping the live loop with deploy/prometheus's rules: every query of the
Grafana dashboard (deploy/grafana/dashboards/distillery.json) returns data and every rule
evaluates without error. The module makes what the dashboard draws on the shared loop itself
(``exercised``: labelled traffic, feedback, a round through its rollout, a drift check), so it
passes alone as after test_loop.py and test_rollout.py. Grafana itself is not packaged here:
its dashboard is checked through the queries it sends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from cli.launcher import Running
from distillery.events import Topics
from services.broker import free_port
from tests.conftest import ROOT
from training.registry import Registry

pytestmark = pytest.mark.integration

RULES = ROOT / "deploy" / "prometheus" / "rules" / "distillery.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "distillery.json"
GRAFANA_VARIABLE = re.compile(r"\$__(rate_interval|interval|range)\b")
STARTED_AT_ZERO = {  # distillery.metrics.start_at_zero: metric → (label, values it must show)
    "ray_distillery_dead_letters_total": (
        "topic",
        {Topics.SAMPLED, Topics.LABELS, Topics.FEEDBACK},
    ),
    "ray_distillery_sample_dropped_total": ("reason", {"queue_full", "send_failed"}),
    "ray_distillery_candidate_errors_total": ("stage", {"canary", "shadow"}),
    "ray_distillery_shadow_compared_total": ("agreed", {"true", "false"}),
    "ray_distillery_swap_failed_total": None,
    "ray_distillery_spool_replayed_total": None,
}


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _config(target: str, rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "distillery", "static_configs": [{"targets": [target]}]}],
    }


def start_prometheus(tmp_path: Path, target: str, rules: Path) -> Prometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: `make test` installs it (`make debs`, as root)")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(target, rules)))
    port = free_port()
    log = tmp_path / "prometheus.log"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    return Prometheus(f"http://127.0.0.1:{port}", process, log)


def stop(prometheus: Prometheus) -> None:
    prometheus.process.terminate()
    try:
        prometheus.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        prometheus.process.kill()
        prometheus.process.wait(timeout=5)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not after {timeout_s:.0f} s")


def api(prometheus: Prometheus, path: str, **params: str) -> Any:
    response = httpx.get(f"{prometheus.url}/api/v1/{path}", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def query(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = api(prometheus, "query", query=expr)["result"]
    return result


def target_up(prometheus: Prometheus) -> bool:
    try:
        return [r["value"][1] for r in query(prometheus, 'up{job="distillery"}')] == ["1"]
    except httpx.HTTPError:
        assert prometheus.process.poll() is None, prometheus.log_tail()
        return False


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expr) for every target, Grafana's interval variables replaced by 1m."""
    panels = json.loads(path.read_text())["panels"]
    return [
        (panel["title"], GRAFANA_VARIABLE.sub("1m", target["expr"]))
        for panel in panels
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def empty_queries(
    prometheus: Prometheus, queries: list[tuple[str, str]], timeout_s: float
) -> list[tuple[str, str]]:
    """Query until each answers with data or ``timeout_s`` passes; the ones still empty."""
    pending = list(queries)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = [(title, expr) for title, expr in pending if not query(prometheus, expr)]
        if pending:
            time.sleep(2)
    return pending


def rule_groups(prometheus: Prometheus) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = api(prometheus, "rules")["groups"]
    return groups


def all_rules_evaluated(prometheus: Prometheus) -> bool:
    rules = [rule for group in rule_groups(prometheus) for rule in group["rules"]]
    return bool(rules) and all(rule["health"] != "unknown" for rule in rules)


def send_traffic(loop: Running) -> None:
    """Predictions (some opted out of training) and feedback, good and bad, on the others."""
    texts = ["A wonderful, moving film.", "Dull, slow and far too long.", "fine I guess"]
    with httpx.Client(base_url=loop.api_url, timeout=30) as client:
        for i in range(6):
            opt_out = i % 3 == 0
            response = client.post(
                "/v1/predict", json={"text": texts, "allow_training": not opt_out}
            )
            assert response.status_code == 200, response.text
            if opt_out:
                continue
            for rating, answer in zip((1, 5, 2), response.json()["predictions"], strict=True):
                feedback = {
                    "request_id": answer["request_id"],
                    "feedback_token": answer["feedback_token"],
                    "rating": rating,
                }
                sent = client.post("/v1/feedback", json=feedback)
                assert sent.status_code == 202, sent.text


def send_refused(loop: Running) -> None:
    """One request of each route refused with its reason: what the "refused" panel counts."""
    with httpx.Client(base_url=loop.api_url, timeout=30) as client:
        empty = client.post("/v1/predict", json={"text": "   "})
        assert empty.status_code == 422, empty.text
        forged = {"request_id": "never-answered", "feedback_token": "forged", "rating": 1}
        refused = client.post("/v1/feedback", json=forged)
        assert refused.status_code in (403, 422), refused.text


def post_steadily(loop: Running, stop: threading.Event, failed: list[str]) -> None:
    """Fresh texts until ``stop``: the labels a round trains on and a rollout's live evidence."""
    n = 0
    with httpx.Client(base_url=loop.api_url, timeout=30) as client:
        while not stop.is_set():
            n += 1
            text = [f"watch {n}-{i}: a {('great', 'dull')[i % 2]} film" for i in range(4)]
            response = client.post("/v1/predict", json={"text": text})
            if response.status_code != 200:
                failed.append(response.text)
            stop.wait(0.2)


def rounds_ended(registry: Registry) -> bool:
    """A round after the bootstrap's v1 left its rollout, promoted or rolled back."""
    ends = ("promoted", "rolled_back")
    return any(e.event in ends and e.version > 1 for e in registry.history())


@pytest.fixture(scope="module")
def exercised(loop: Running) -> Running:
    """What the panels draw, made on this loop unless an earlier module already did: labels,
    feedback, a round's outcome and rollout transitions, and a drift measurement."""
    import ray

    registry = Registry(loop.settings.paths.registry_dir)
    stop = threading.Event()
    failed: list[str] = []
    sender = threading.Thread(target=post_steadily, args=(loop, stop, failed))
    sender.start()
    try:
        send_traffic(loop)
        send_refused(loop)
        if not rounds_ended(registry):
            time.sleep(5)  # labeler + store flush, for the round's recent window
            report = ray.get(loop.scheduler.retrain.remote("test_watch"))
            if report.outcome == "shadow":  # the gate passed: wait for the rollout to end
                wait_until(lambda: registry.rollout() is None, 240, f"v{report.version} rollout")
        wait_until(lambda: ray.get(loop.scheduler.status.remote()).drift is not None, 60, "drift")
    finally:
        stop.set()
        sender.join()
    assert not failed, failed[:3]
    return loop


@pytest.fixture
def prometheus(exercised: Running, tmp_path: Path) -> Iterator[Prometheus]:
    loop = exercised
    target = urlsplit(loop.metrics_url).netloc
    running = start_prometheus(tmp_path, target, RULES)
    try:
        wait_until(lambda: target_up(running), 60, f"Prometheus scraping {target}")
        yield running
    finally:
        stop(running)


def test_every_dashboard_query_has_data_and_every_rule_is_healthy(
    exercised: Running, prometheus: Prometheus
) -> None:
    loop = exercised
    send_traffic(loop)
    queries = dashboard_queries()
    assert len(queries) >= 30, queries
    empty = empty_queries(prometheus, queries, timeout_s=90)
    assert not empty, "dashboard queries with no data:\n" + "\n".join(
        f"  [{title}] {expr}" for title, expr in empty
    )
    for name, labelled in STARTED_AT_ZERO.items():
        series = query(prometheus, name)
        assert series, f"{name}: no series (it should start at 0)"
        if labelled is not None:
            label, values = labelled
            assert values <= {s["metric"].get(label) for s in series}, (name, series)

    wait_until(lambda: all_rules_evaluated(prometheus), 30, "every rule evaluated once")
    groups = rule_groups(prometheus)
    expected = [group["name"] for group in yaml.safe_load(RULES.read_text())["groups"]]
    assert sorted(group["name"] for group in groups) == sorted(expected)
    unhealthy = [
        (rule["name"], rule["health"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert not unhealthy, unhealthy
    recorded = query(prometheus, "distillery:teacher_disagreement:ratio5m")
    assert {r["metric"].get("model_version") for r in recorded} - {None}, recorded


def test_the_operator_page_draws_the_live_loop(exercised: Running, tmp_path: Path) -> None:
    """/dashboard in headless Chromium against the live loop: it renders without a script error
    (``data-state="ready"``), shows the served version, draws the drift series the scheduler
    measured and lists the rounds the earlier tests ran; a full-page screenshot is saved (to
    ``$DISTILLERY_SCREENSHOT`` when set: the README's picture comes from here)."""
    import os

    from tests.browser import element_text, rendered_dom, screenshot, without_scripts

    loop = exercised
    data = httpx.get(f"{loop.api_url}/v1/dashboard", timeout=30).json()
    assert data["series"] and data["rounds"] and data["reports"], sorted(data)
    assert any(point["drift"] for point in data["series"]), data["series"][-3:]
    url = f"{loop.api_url}/dashboard"
    dom = without_scripts(rendered_dom(url))
    assert element_text(dom, "current-version") == f"v{data['current_version']}"
    drift_chart = re.search(r'<figure class="chart" id="chart-drift">.*?</figure>', dom, re.S)
    assert drift_chart and 'data-series="embedding"' in drift_chart.group(0)
    teacher = element_text(dom, "teacher") or ""
    assert data["teacher"]["teacher_id"] in teacher and data["teacher"]["state"] in teacher
    rounds = element_text(dom, "rounds") or ""
    assert all(f"v{r['version']}" in rounds for r in data["rounds"][:3]), rounds
    out = Path(os.environ.get("DISTILLERY_SCREENSHOT", tmp_path / "dashboard.png"))
    screenshot(url, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000
