"""Shared test helpers: project paths and a check that the VADER data was fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TASK = ROOT / "tasks" / "sentiment.yaml"


@pytest.fixture(scope="session")
def vader_ready() -> Path:
    marker = DATA / "vader" / ".complete"
    if not marker.exists():
        pytest.fail("VADER data missing: run `make data` (the test command does it)")
    return DATA
