"""Which rows are sent to the current teacher when old labels are relabelled."""

from __future__ import annotations

import pandas as pd

from monitoring.relabel import to_relabel


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "relabel:a", "d", "d"],
            "teacher_id": ["old", "old", "new", "new", None, None],
            "ts": [1.0, 2.0, 3.0, 4.0, 5.0, 5.0],
        }
    )


def test_newest_old_rows_first_without_relabels_done_or_sent() -> None:
    picked = to_relabel(_rows(), "new", 10, sent=set())
    assert list(picked["request_id"]) == ["d", "b"]  # a has its relabel; c is the new teacher's
    assert list(to_relabel(_rows(), "new", 1, sent=set())["request_id"]) == ["d"]
    assert list(to_relabel(_rows(), "new", 10, sent={"d"})["request_id"]) == ["b"]
    assert to_relabel(_rows(), "new", 0, sent=set()).empty
