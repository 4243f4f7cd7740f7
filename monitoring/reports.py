"""Drift reports on disk: Evidently's HTML, a JSON summary beside each, newest ``keep`` kept.

Layout under ``folder``: ``drift-20261129T070000Z.html`` and ``drift-20261129T070000Z.json``
(``created`` Unix s, ``drift_share`` per kind, rows). Names are checked against one pattern
before any file is opened, so a request can name no other file.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from distillery.files import write_atomic

NAME = re.compile(r"^drift-\d{8}T\d{6}Z(?:-\d{1,3})?\.html$")


class ReportEntry(BaseModel):
    """One kept report, as ``GET /v1/reports`` and the operator page list it."""

    model_config = ConfigDict(frozen=True)

    name: str
    created: float  # Unix s
    url: str  # /v1/reports/<name>
    drift_share: dict[str, float]  # kind → drifted share of its columns
    version: int | None = None  # the version whose training window was the reference
    reference_rows: int | None = None
    current_rows: int | None = None


class ReportListing(BaseModel):
    """``GET /v1/reports``: every kept report, newest first."""

    reports: list[ReportEntry]


class Reports:
    def __init__(self, folder: Path, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep}: at least one report must be kept")
        self.folder = folder
        self.keep = keep

    def next_path(self, now: float | None = None) -> Path:
        """A free report path for a report made at ``now`` (Unix s)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        path = self.folder / f"drift-{stamp}.html"
        n = 1
        while path.exists():
            path = self.folder / f"drift-{stamp}-{n}.html"
            n += 1
        return path

    def add(
        self,
        html: Path,
        drift_share: dict[str, float],
        *,
        version: int | None = None,
        reference_rows: int | None = None,
        current_rows: int | None = None,
    ) -> ReportEntry:
        """Record the summary of the report Evidently wrote at ``html`` (from ``next_path``),
        then delete the oldest reports beyond ``keep``; returns the listing entry."""
        if not NAME.match(html.name) or not html.is_file():
            raise ValueError(f"{html} is not a report written at a path from next_path()")
        entry = ReportEntry(
            name=html.name, created=time.time(), url=f"/v1/reports/{html.name}",
            drift_share=drift_share, version=version,
            reference_rows=reference_rows, current_rows=current_rows,
        )  # fmt: skip
        write_atomic(html.with_suffix(".json"), entry.model_dump_json(exclude={"url"}).encode())
        for old in self._names()[self.keep :]:
            (self.folder / old).unlink(missing_ok=True)
            (self.folder / old).with_suffix(".json").unlink(missing_ok=True)
        return entry

    def listing(self) -> list[ReportEntry]:
        """Every kept report, newest first: name, created, url, and its summary."""
        out = []
        for name in self._names():
            sidecar = (self.folder / name).with_suffix(".json")
            if sidecar.is_file():
                out.append(self._entry(json.loads(sidecar.read_bytes())))
        return out

    def read(self, name: str) -> bytes:
        """The HTML of report ``name``; KeyError naming it when there is no such report."""
        path = self.folder / name
        if not NAME.match(name) or not path.is_file():
            raise KeyError(f"no drift report named {name!r}")
        return path.read_bytes()

    def _names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted((p.name for p in self.folder.glob("drift-*.html")), reverse=True)

    @staticmethod
    def _entry(summary: dict[str, object]) -> ReportEntry:
        """The entry of a summary as written beside its report (older ones: fewer fields)."""
        return ReportEntry.model_validate({**summary, "url": f"/v1/reports/{summary['name']}"})
