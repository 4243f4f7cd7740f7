"""The drift checks' Evidently workspace: the signals' values, the dashboard's panels (kept once,
operator panels left alone), the series Evidently's UI would draw from the snapshots, pruning,
a restart reusing the project, and the Watch writing each check without ever failing on it."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from distillery.settings import Settings
from monitoring.evidently_workspace import (
    DISAGREEMENT,
    REPORT_TAG,
    SIGNALS_TAG,
    TAB,
    EvidentlyWorkspace,
    panels,
    share_column,
    signal_values,
    to_prune,
    with_panels,
)
from monitoring.watch import Watch
from tests.drift_snapshots import drift_snapshot
from tests.unit.test_watch import TASK, setup  # noqa: F401 (the Watch's store and registry)
from training.registry import Registry

CHECKS = [
    ({"features": 0.0, "embedding": 0.2, "prediction": 0.0}, 0.25),
    ({"features": 0.5, "embedding": 0.4, "prediction": 0.5}, 0.30),
    ({"features": 0.67, "embedding": 0.8, "prediction": 0.5}, None),
]


def _workspace(folder: Path, keep_signals: int = 10, keep_reports: int = 2) -> EvidentlyWorkspace:
    return EvidentlyWorkspace(folder, "sentiment", keep_signals, keep_reports)


def _series(folder: Path, project_id: Any) -> dict[str, list[float | None]]:
    """What Evidently's UI would plot for each of our panels' lines, by legend: the series its
    own storage computes from the snapshots on disk, with the panels' own filters."""
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    storage = InMemoryDataStorage(str(folder))
    out = {}
    for panel in panels():
        for value in panel.values:
            wanted = SeriesFilter(tags=value.tags, metadata=value.metadata, metric=value.metric,
                                  metric_labels=value.metric_labels)  # fmt: skip
            found = asyncio.run(storage.get_data_series(project_id, [wanted], None, None))
            assert len(found.series) <= 1, f"{value.legend}: {found.series}"
            out[str(value.legend)] = found.series[0].values if found.series else []
    return out


def test_signal_values_leave_out_what_was_not_measured() -> None:
    values = signal_values({"features": 0.5, "embedding": math.nan}, None)
    assert values == {share_column("features"): 0.5}
    assert signal_values(None, 0.25) == {DISAGREEMENT: 0.25}
    assert signal_values(None, None) == {}


def test_to_prune_names_the_oldest_beyond_keep() -> None:
    t = [datetime(2026, 1, 1, 0, m) for m in range(4)]
    runs = [(t[2], "c"), (t[0], "a"), (t[3], "d"), (t[1], "b")]
    assert to_prune(runs, 2) == ["a", "b"]
    assert to_prune(runs, 9) == [] and to_prune([], 1) == []


def test_panels_are_added_once_and_other_panels_are_kept() -> None:
    from evidently.sdk.models import DashboardModel, DashboardTabModel
    from evidently.sdk.panels import text_panel

    own = text_panel("an operator's note")
    tab = DashboardTabModel(title="Mine", panels=[own.id])
    start = DashboardModel(tabs=[tab], panels=[own])
    first, changed = with_panels(start, panels())
    assert changed and [p.title for p in first.panels] == [
        "an operator's note", "Drift share per kind", "Teacher–student disagreement"
    ]  # fmt: skip
    ours = next(t for t in first.tabs if t.title == TAB)
    assert ours.panels == [p.id for p in panels()] and first.tabs[0].panels == [own.id]
    again, changed = with_panels(first, panels())
    assert not changed and again.dict() == first.dict()
    edited = first.copy(deep=True)
    edited.panels[1].title = "renamed by an older release"
    fixed, changed = with_panels(edited, panels())
    assert changed and fixed.dict() == first.dict()  # replaced in place, listed once


def test_checks_become_series_the_ui_plots_and_old_snapshots_are_pruned(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, keep_signals=3, keep_reports=1)
    t0 = time.time() - 3_600
    report = drift_snapshot()
    for i, (shares, disagreement) in enumerate(CHECKS):
        added = workspace.add_check(t0 + 60 * i, 1, signal_values(shares, disagreement), report)
        assert len(added) == 2
    project_id = workspace.project_id()
    assert _series(tmp_path, project_id) == {
        "features": [0.0, 0.5, 0.67],
        "embedding": [0.2, 0.4, 0.8],
        "prediction": [0.0, 0.5, 0.5],
        "disagreement": [0.25, 0.30],  # the third check had none: a gap, not a zero
    }
    workspace.add_check(t0 + 180, 2, signal_values(*CHECKS[0]))
    assert _series(tmp_path, project_id)["features"] == [0.5, 0.67, 0.0]  # the oldest went
    tags = [_tags(tmp_path, project_id, sid) for sid in workspace._ws.list_runs(project_id)]
    assert sorted(tags) == [[REPORT_TAG], [SIGNALS_TAG], [SIGNALS_TAG], [SIGNALS_TAG]]


def _tags(folder: Path, project_id: Any, sid: Any) -> list[str]:
    head = json.loads((folder / str(project_id) / "snapshots" / f"{sid}.json").read_bytes())
    tags: list[str] = head["tags"]
    return tags


def test_a_restart_reuses_the_project_prunes_what_it_wrote_and_leaves_the_rest(
    tmp_path: Path,
) -> None:
    from evidently import Report
    from evidently.metrics import RowCount

    first = _workspace(tmp_path, keep_signals=2)
    t0 = time.time() - 3_600
    first.add_check(t0, 1, signal_values(*CHECKS[0]))
    project_id = first.project_id()
    other = Report([RowCount()]).run(pd.DataFrame({"x": [1, 2]}), None)
    mine = first._ws.add_run(project_id, other).id  # an operator's own snapshot, untagged
    again = _workspace(tmp_path, keep_signals=2)
    for i in (1, 2):
        again.add_check(t0 + 60 * i, 1, signal_values(*CHECKS[i]))
    assert again.project_id() == project_id
    assert [p.name for p in again._ws.list_projects()] == ["sentiment"]
    dashboard = again._ws.get_dashboard(project_id)
    assert [p.title for p in dashboard.panels] == [p.title for p in panels()]  # not twice
    runs = set(again._ws.list_runs(project_id))
    assert mine in runs and len(runs) == 3  # two signals snapshots and the operator's
    assert _series(tmp_path, project_id)["features"] == [0.5, 0.67]


def test_the_watch_writes_each_check_and_its_report(
    setup: tuple[Settings, Registry, float],  # noqa: F811
) -> None:
    settings, registry, _ = setup
    watch = Watch(settings, TASK, registry)
    for _ in range(2):
        signals = watch.measure(0, 0.0)  # html_every=2: the first check saves a report
    workspace = watch.workspace
    project_id = workspace.project_id()
    tags = sorted(
        _tags(workspace.folder, project_id, s) for s in workspace._ws.list_runs(project_id)
    )
    assert tags == [[REPORT_TAG], [SIGNALS_TAG], [SIGNALS_TAG]]
    series = _series(workspace.folder, project_id)
    assert watch.drift is not None
    shares = watch.drift.share
    assert [series[kind][-1] for kind in shares] == pytest.approx(list(shares.values()))
    assert series["disagreement"] == pytest.approx([signals.disagreement] * 2)


def test_a_broken_workspace_never_breaks_the_check(
    setup: tuple[Settings, Registry, float],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, registry, _ = setup
    (settings.paths.state_dir / "evidently").write_text("a file where the folder should be")
    watch = Watch(settings, TASK, registry)
    with caplog.at_level(logging.WARNING, logger="monitoring.watch"):
        signals = watch.measure(0, 0.0)
    assert signals.drift is not None and watch.drift is not None  # the check itself went on
    assert watch.series[-1].drift == watch.drift.share
    assert "could not write the check to the Evidently workspace" in caplog.text
