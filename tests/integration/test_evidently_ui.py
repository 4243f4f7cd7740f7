"""Evidently's own UI (``evidently ui``, as ``distillery up`` starts it) over a workspace the drift
checks wrote, loaded in headless Chromium: the task's project, its dashboard's two panels drawn
with every check's values (one written while the UI runs, as the scheduler does), Evidently's
drift report of a check, and nothing fetched from outside loopback. No Ray, no broker."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from monitoring.evidently_workspace import EvidentlyWorkspace, signal_values
from services.evidently_ui import EvidentlyUI
from tests.browser import page_requests, rendered_dom, without_scripts
from tests.drift_snapshots import drift_snapshot

pytestmark = pytest.mark.integration

CHECKS = [  # (drift share per kind, disagreement); the third check had no disagreement
    ({"features": 0.0, "embedding": 0.2, "prediction": 0.0}, 0.25),
    ({"features": 0.5, "embedding": 0.4, "prediction": 0.5}, 0.30),
    ({"features": 0.67, "embedding": 0.8, "prediction": 0.5}, None),
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _text(dom: str) -> str:
    return " ".join(re.sub(r"<style.*?</style>|<[^>]+>", " ", dom, flags=re.S).split())


def _panel(dom: str, title: str) -> str:
    """The rendered markup of the panel titled ``title``: from its heading to the next one."""
    start = dom.index(f">{title}</h5>")
    after = dom.find("<h5", start)
    return dom[start : after if after > 0 else len(dom)]


def _lines(panel: str) -> list[list[tuple[float, float]]]:
    """Each line series the chart drew (MUI X ``MuiLineElement`` paths): its points, in order."""
    lines = []
    for d in re.findall(r'<path[^>]*\bd="([^"]+)"[^>]*class="MuiLineElement-root', panel):
        tokens = re.findall(r"[MLC]|-?\d+(?:\.\d+)?(?:e-?\d+)?", d)
        points, i = [], 0
        while i < len(tokens):
            size = {"M": 2, "L": 2, "C": 6}[tokens[i]]
            numbers = [float(t) for t in tokens[i + 1 : i + 1 + size]]
            points.append((numbers[-2], numbers[-1]))
            i += 1 + size
        lines.append(points)
    return lines


def _wait_for_snapshots(ui: EvidentlyUI, project_id: object, count: int, timeout_s: float) -> None:
    """Until the UI lists ``count`` snapshots of the project (it watches the folder)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = httpx.get(f"{ui.url}/api/projects/{project_id}/snapshots", timeout=5).json()
        if len(listed) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"the UI lists {len(listed)} snapshots, not {count}, after {timeout_s}s")


def test_the_ui_draws_the_projects_panels_from_the_checks(tmp_path: Path) -> None:
    folder = tmp_path / "evidently"
    workspace = EvidentlyWorkspace(folder, "sentiment", keep_signals=10, keep_reports=2)
    t0 = time.time() - 600
    report_id = workspace.add_check(t0, 1, signal_values(*CHECKS[0]), drift_snapshot())[0]
    workspace.add_check(t0 + 60, 1, signal_values(*CHECKS[1]))
    project_id = workspace.project_id()
    ui = EvidentlyUI(folder, log_path=tmp_path / "evidently-ui.log").start()
    try:
        seconds = ui.wait_ready(timeout_s=240)
        print(f"evidently ui answered in {seconds:.1f}s")
        workspace.add_check(t0 + 120, 1, signal_values(*CHECKS[2]))  # while the UI runs
        _wait_for_snapshots(ui, project_id, 4, timeout_s=30)  # 3 signals, 1 drift report
        net_log = tmp_path / "net-log.json"
        url = f"{ui.url}/projects/{project_id}"
        dom = without_scripts(
            rendered_dom(url, budget_ms=15_000, require_ready=False, timeout_s=180, net_log=net_log)
        )
        report = _text(
            rendered_dom(f"{url}/reports/{report_id}", budget_ms=15_000, require_ready=False,
                         timeout_s=180)
        )  # fmt: skip
    finally:
        ui.stop()
    assert not ui.alive()
    assert "Projects / sentiment / Dashboard" in _text(dom)  # the project, in the breadcrumbs
    drift = _panel(dom, "Drift share per kind")
    for legend in ("features", "embedding", "prediction"):
        assert f">{legend}<" in drift
    features, embedding, prediction = _lines(drift)
    assert [len(line) for line in (features, embedding, prediction)] == [3, 3, 3]
    ys = [[y for _, y in line] for line in (features, embedding, prediction)]
    assert ys[0][0] > ys[0][1] > ys[0][2]  # 0 → 0.5 → 0.67: SVG y grows downwards
    assert ys[1][0] > ys[1][1] > ys[1][2]  # 0.2 → 0.4 → 0.8
    assert ys[2][0] > ys[2][1] and ys[2][1] == pytest.approx(ys[2][2])  # 0 → 0.5 → 0.5
    assert ys[0][0] == pytest.approx(ys[2][0])  # both 0.0
    (disagreement,) = _lines(_panel(dom, "Teacher–student disagreement"))
    assert len(disagreement) == 2 and disagreement[0][1] > disagreement[1][1]  # 0.25 → 0.30
    requested = page_requests(net_log)
    assert any("data_series_batch" in u for u in requested), requested
    assert "Dataset Drift is detected" in report
    for column in ("char_length", "word_count", "predicted_label"):
        assert column in report
    outside = [u for u in requested if urlsplit(u).hostname not in LOOPBACK]
    assert outside == [], f"the UI page fetched from outside loopback: {outside}"
