"""Drift checks as snapshots in an Evidently workspace, so that ``evidently ui`` shows them.

Operators watching drift expect Evidently's own UI: a project per task, its snapshots over time,
a dashboard. The workspace is a folder (``state/evidently``, :func:`workspace_dir`) that
``distillery up`` serves with ``evidently ui`` (``services/evidently_ui.py``), which watches it
and shows new snapshots as they land; the scheduler's ``Watch`` writes into it after each check.

Two kinds of snapshot, tagged, each pruned to its own count (only snapshots carrying one of these
tags are ever deleted; anything else in the project is left alone):

- ``signals``, every check: the numbers the triggers read, the drift share per kind and the
  teacher–student disagreement. They are not Evidently metrics of one dataset (a kind's share
  counts the columns ``monitoring/drift.py`` found stable without asking Evidently, and the
  disagreement comes from the label store), so each is a ``MeanValue`` over a one-row dataset
  holding it: a plain single value the dashboard's panels select by column (about 70 KB a check,
  most of it Evidently's widget for the snapshot's own page);
- ``drift-report``, as often as the HTML report (``monitor.html_every``): Evidently's
  ``DataDriftPreset`` snapshot of the check itself, per-column tests and distributions (about
  0.9 MB at 1,000 rows a window, which is why it is not every check).

The dashboard's two line panels (drift share per kind, disagreement) have fixed ids: they are
added once, replaced when this code changes them, and panels an operator added are kept.
Evidently is imported lazily (seconds); the panel and pruning logic is pure.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("features", "embedding", "prediction")
SIGNALS_TAG = "signals"
REPORT_TAG = "drift-report"
TAB = "Distillery"
DISAGREEMENT = "disagreement"
_IDS = uuid.UUID("8f0d3c4e-2b7a-4c51-9d6e-5a1f0b3e7c21")  # namespace of the fixed panel ids


def workspace_dir(state_dir: Path) -> Path:
    """The Evidently workspace folder under the state folder."""
    return state_dir / "evidently"


def share_column(kind: str) -> str:
    """The signals dataset's column holding the drift share of ``kind``."""
    return f"drift_share_{kind}"


def signal_values(shares: dict[str, float] | None, disagreement: float | None) -> dict[str, float]:
    """One check's values for the signals snapshot, by column; a missing or non-finite value is
    left out (a gap in its panel), so a check without enough rows for drift still records the
    disagreement."""
    values = {share_column(kind): share for kind, share in (shares or {}).items()}
    if disagreement is not None:
        values[DISAGREEMENT] = disagreement
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def _panel_id(key: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, key)


def panels() -> list[Any]:
    """The dashboard's panels: drift share per kind over time, disagreement over time."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    def value(column: str, legend: str) -> PanelMetric:
        return PanelMetric(
            legend=legend, metric="MeanValue", metric_labels={"column": column},
            tags=[SIGNALS_TAG],
        )  # fmt: skip

    drift = line_plot_panel(
        "Drift share per kind",
        [value(share_column(kind), kind) for kind in KINDS],
        "share of each kind's columns that drifted, per check (the drift trigger reads the "
        "largest)",
    )
    disagreement = line_plot_panel(
        "Teacher–student disagreement",
        [value(DISAGREEMENT, "disagreement")],
        "share of the serving version's sampled answers the teacher labelled otherwise",
    )
    drift.id, disagreement.id = _panel_id("drift-share"), _panel_id(DISAGREEMENT)
    return [drift, disagreement]


def with_panels(dashboard: Any, wanted: list[Any]) -> tuple[Any, bool]:
    """``dashboard`` (a ``DashboardModel``) with ``wanted`` in it: a panel with the same id is
    replaced in place, a missing one appended and listed on the ``TAB`` tab (created if need be);
    other panels and tabs are kept. Returns (dashboard, whether it changed)."""
    from evidently.sdk.models import DashboardTabModel

    out = dashboard.copy(deep=True)
    by_id = {p.id: i for i, p in enumerate(out.panels)}
    tab = next((t for t in out.tabs if t.title == TAB), None)
    if tab is None:
        tab = DashboardTabModel(id=_panel_id("tab"), title=TAB, panels=[])
        out.tabs.append(tab)
    for panel in wanted:
        if panel.id in by_id:
            out.panels[by_id[panel.id]] = panel
        else:
            out.panels.append(panel)
        if not any(panel.id in t.panels for t in out.tabs):
            tab.panels.append(panel.id)
    return out, out.dict() != dashboard.dict()


def to_prune(runs: list[tuple[datetime, str]], keep: int) -> list[str]:
    """Of ``runs`` ((timestamp, snapshot id) pairs, one tag's), the ids beyond the newest
    ``keep``, oldest first."""
    ordered = sorted(runs)
    return [sid for _, sid in ordered[: max(len(ordered) - keep, 0)]]


def signals_snapshot(values: dict[str, float], checked_at: datetime) -> Any:
    """A snapshot with one ``MeanValue`` per value, over a one-row dataset holding them."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    columns = list(values)
    dataset = Dataset.from_pandas(
        pd.DataFrame([values], columns=columns),
        data_definition=DataDefinition(numerical_columns=columns),
    )
    report = Report([MeanValue(column=c) for c in columns])
    return report.run(dataset, None, timestamp=checked_at)


def retagged(
    snapshot: Any, name: str, tags: list[str], metadata: dict[str, str], checked_at: datetime
) -> Any:
    """``snapshot`` with its name, tags, metadata and timestamp set (through its model)."""
    from evidently.core.report import Snapshot

    model = snapshot.to_snapshot_model()
    update = {"name": name, "tags": tags, "metadata": metadata, "timestamp": checked_at}
    return Snapshot.load_model(model.copy(update=update))


@dataclass
class EvidentlyWorkspace:
    """One task's project in the workspace at ``folder``; opened on first use. Thread-safe (the
    scheduler's loop and a remote ``measure`` may check at once)."""

    folder: Path
    project_name: str
    keep_signals: int
    keep_reports: int
    _ws: Any = None
    _project_id: Any = None
    _runs: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def project_id(self) -> Any:
        """The project's id: found by name (so a restart reuses it) or created, with the
        dashboard's panels ensured and this project's tagged snapshots listed for pruning."""
        with self._lock:
            return self._open()

    def _open(self) -> Any:
        if self._project_id is None:
            from evidently.ui.workspace import Workspace

            self.folder.mkdir(parents=True, exist_ok=True)
            ws = Workspace(str(self.folder))
            found = ws.search_project(self.project_name)
            project = found[0] if found else ws.create_project(self.project_name, _DESCRIPTION)
            dashboard, changed = with_panels(ws.get_dashboard(project.id), panels())
            if changed:
                ws.save_dashboard(project.id, dashboard)
            self._ws, self._project_id = ws, project.id
            self._runs = self._list_runs()
        return self._project_id

    def add_check(
        self, checked_at: float, version: int | None, values: dict[str, float], report: Any = None
    ) -> list[str]:
        """Add one check: the ``drift-report`` snapshot when given, the ``signals`` snapshot
        when there are values; then prune each kind to its count. Returns the new ids."""
        with self._lock:
            return self._add_check(self._open(), checked_at, version, values, report)

    def _add_check(
        self,
        project_id: Any,
        checked_at: float,
        version: int | None,
        values: dict[str, float],
        report: Any,
    ) -> list[str]:
        when = datetime.fromtimestamp(checked_at)
        metadata = {} if version is None else {"model_version": str(version)}
        label = "" if version is None else f" v{version}"
        added = []
        if report is not None:
            added.append(self._add(report, f"drift report{label}", REPORT_TAG, metadata, when))
        if values:
            signals = signals_snapshot(values, when)
            added.append(self._add(signals, f"signals{label}", SIGNALS_TAG, metadata, when))
        for tag, keep in ((REPORT_TAG, self.keep_reports), (SIGNALS_TAG, self.keep_signals)):
            for sid in to_prune(self._runs.get(tag, []), keep):
                self._ws.delete_run(project_id, sid)
                self._runs[tag] = [r for r in self._runs[tag] if r[1] != sid]
        return added

    def _add(
        self, snapshot: Any, name: str, tag: str, metadata: dict[str, str], when: datetime
    ) -> str:
        ref = self._ws.add_run(self._project_id, retagged(snapshot, name, [tag], metadata, when))
        self._runs.setdefault(tag, []).append((when, str(ref.id)))
        return str(ref.id)

    def _list_runs(self) -> dict[str, list[tuple[datetime, str]]]:
        """This project's snapshots with one of our tags, by tag: (timestamp, id), each file read
        as plain JSON for just these two (not parsed into Evidently's model)."""
        from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME

        runs: dict[str, list[tuple[datetime, str]]] = {}
        folder = self.folder / str(self._project_id) / SNAPSHOTS_DIR_NAME
        for sid in self._ws.list_runs(self._project_id):
            try:
                head = json.loads((folder / f"{sid}.json").read_bytes())
                when = datetime.fromisoformat(str(head["timestamp"]))
                if when.tzinfo is not None:  # ours are naive local time, as Evidently's default
                    when = when.astimezone().replace(tzinfo=None)
            except (OSError, ValueError, KeyError):
                log.warning("evidently workspace: snapshot %s unreadable; left alone", sid)
                continue
            for tag in {SIGNALS_TAG, REPORT_TAG} & set(head.get("tags") or []):
                runs.setdefault(tag, []).append((when, str(sid)))
        return runs


_DESCRIPTION = (
    "distillery's drift checks: drift share per kind and teacher–student disagreement every "
    "check (tag signals), Evidently's drift report every few (tag drift-report)"
)
