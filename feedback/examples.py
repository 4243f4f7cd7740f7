"""The example store's read side: every question asked of its shards is answered here.

``feedback.store`` writes the shards (teacher labels and feedback from Kafka, one Parquet file
per flush, named by its write time); the round (``training.cycle``), the gate's holdout, the
watch (``monitoring.watch``), the rollout's evidence (``monitoring.promotion``), the relabeler
and the benchmarks read them through these functions, so each rule is written once:

- a replayed batch never counts twice: labels dedupe by request id, the first written wins;
- a request rated twice by one key counts once, with its latest rating (``latest_ratings``);
- the rollout's checks and the triggers read only the keys ``feedback.keys.rating_keys`` names;
- a label's prediction time is ``predicted_at``, or its own ``ts`` for rows written before it;
- ``relabel:<id>`` rows replace the label of ``<id>`` (``monitoring.relabel``);
- feedback joins a label only within ``join_window_s`` of the prediction.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from distillery.task import Task
from feedback.tokens import OPEN_KEY

log = logging.getLogger(__name__)

RELABEL_PREFIX = "relabel:"  # the request id of a relabelled row: relabel:<original id>
STORED_AT = "stored_at"  # a row's write time, Unix s (``feedback.store.write_shard``)


def supersede_relabelled(labels: pd.DataFrame) -> pd.DataFrame:
    """Each ``relabel:<id>`` row replaces row ``<id>``: it takes the original's request id and
    times (so the holdout split, the feedback join and the windows see the same request), with
    the new teacher's label; an original that has a relabel is dropped."""
    if labels.empty:
        return labels
    ids = labels["request_id"].astype(str)
    new = ids.str.startswith(RELABEL_PREFIX)
    if not new.any():
        return labels
    fresh = labels[new].copy()
    fresh["request_id"] = ids[new].str[len(RELABEL_PREFIX) :]
    originals = labels[~new].drop_duplicates("request_id").set_index("request_id")
    known = fresh["request_id"].isin(originals.index)
    fresh = fresh[known]
    for column in ("ts", "predicted_at"):
        if column in originals:
            fresh[column] = fresh["request_id"].map(originals[column]).to_numpy()
    kept = labels[~new & ~labels["request_id"].isin(set(fresh["request_id"]))]
    return pd.concat([kept, fresh], ignore_index=True)


def shard_ns(path: Path) -> int:
    """A shard's write time, ns: its name (``{kind}-{ns}.parquet``; a merged shard: its newest)."""
    return int(path.stem.rpartition("-")[2])


def read_kind(
    store_dir: Path, kind: str, columns: list[str] | None = None, written_after: float = 0.0
) -> pd.DataFrame:
    """Every row of one kind, in arrival order, before dedupe; with ``written_after`` (Unix
    seconds) only rows written since then: shards named since then, and within a merged shard
    the rows whose ``stored_at`` is. A shard the store merged away between listing and reading
    (``feedback.store.compact``) makes it list again."""
    for _ in range(3):
        try:
            return _read_kind(store_dir, kind, columns, written_after)
        except FileNotFoundError:
            continue
    return _read_kind(store_dir, kind, columns, written_after)


def _read_kind(
    store_dir: Path, kind: str, columns: list[str] | None, written_after: float
) -> pd.DataFrame:
    after_ns = int(written_after * 1e9)
    shards = [s for s in sorted(store_dir.glob(f"{kind}-*.parquet")) if shard_ns(s) >= after_ns]
    if not shards:
        return pd.DataFrame(columns=columns or [])
    if not written_after:
        return pd.concat([pd.read_parquet(s, columns=columns) for s in shards], ignore_index=True)
    frame = pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True)
    if STORED_AT in frame:  # NaN: an unmerged shard from before stamping, named since then
        frame = frame[~(frame[STORED_AT] < written_after)].reset_index(drop=True)
    return frame if columns is None else frame[columns]


def read_labels(store_dir: Path) -> pd.DataFrame:
    """Teacher labels, one row per request id (the first written wins)."""
    frame = read_kind(store_dir, "labels")
    return frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)


def count_labels_since(store_dir: Path, since_ts: float) -> int:
    frame = read_kind(store_dir, "labels", columns=["request_id", "ts"])
    if frame.empty:
        return 0
    return int(frame[frame["ts"] > since_ts]["request_id"].nunique())


def prediction_time(frame: pd.DataFrame) -> pd.Series:
    """(N,) float Unix s: each label row's ``predicted_at``, or its ``ts`` where absent."""
    stamps = frame["ts"].astype(float)
    if "predicted_at" not in frame:
        return stamps
    return frame["predicted_at"].astype(float).fillna(stamps)


def labels_predicted_since(store_dir: Path, since: float) -> pd.DataFrame:
    """Teacher labels on predictions made at or after ``since`` (one row per request id)."""
    labels = read_kind(store_dir, "labels", written_after=since)
    if labels.empty:
        return labels
    fresh = labels[prediction_time(labels) >= since]
    return fresh.drop_duplicates("request_id").reset_index(drop=True)


def recent(frame: pd.DataFrame, since: float, column: str = "ts") -> pd.DataFrame:
    """Rows whose ``column`` (Unix s; labels fall back to ``ts``) is at or after ``since``."""
    if frame.empty:
        return frame
    if column == "predicted_at":
        return frame[prediction_time(frame) >= since]
    return frame[frame[column].fillna(frame["ts"]).astype(float) >= since]


def key_ids(feedback: pd.DataFrame) -> pd.Series:
    """(N,) the API key each feedback row came with; ``OPEN_KEY`` for open mode (and rows
    written before keys existed)."""
    if "key_id" not in feedback:
        return pd.Series([OPEN_KEY] * len(feedback), index=feedback.index, dtype=object)
    return feedback["key_id"].fillna(OPEN_KEY).astype(str)


def from_keys(feedback: pd.DataFrame, keys: set[str] | None) -> pd.DataFrame:
    """Feedback from these keys only (None: from everyone)."""
    if keys is None or feedback.empty:
        return feedback
    return feedback[key_ids(feedback).isin(keys)]


def latest_ratings(feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per (request id, key): its latest rating. A key that rates a request again
    replaces its rating; two keys rating one request are two voices."""
    if feedback.empty:
        return feedback
    ordered = feedback.sort_values("ts", kind="stable").assign(_key=key_ids(feedback))
    return ordered.drop_duplicates(["request_id", "_key"], keep="last").drop(columns="_key")


def on_time(
    rows: pd.DataFrame, feedback: pd.DataFrame, window_s: float, per_key: bool = False
) -> pd.DataFrame:
    """Feedback that arrived within ``window_s`` seconds of its prediction, the latest per
    request (``per_key``: per request and API key), oldest first. A label row's prediction
    time is ``predicted_at``, or its own ``ts`` if absent."""
    when = dict(zip(rows["request_id"], prediction_time(rows), strict=True))
    fb = feedback[feedback["request_id"].isin(when.keys())]
    delay = fb["ts"].astype(float) - fb["request_id"].map(when)
    late = int((delay > window_s).sum())
    if late:
        log.info("join: %d feedback events arrived after the %gs window: left out", late, window_s)
    fb = fb[delay <= window_s].sort_values("ts", kind="stable")
    if per_key:
        fb = fb.assign(key_id=key_ids(fb))
        return fb.drop_duplicates(["request_id", "key_id"], keep="last")
    return fb.drop_duplicates("request_id", keep="last")


def join(
    labels: pd.DataFrame, feedback: pd.DataFrame, task: Task, window_s: float = float("inf")
) -> pd.DataFrame:
    """Labels for this task's label list, with rating and correction index (-1) joined in from
    the latest feedback that came within ``window_s`` of the prediction."""
    if labels.empty:
        return labels.assign(correction=[], rating=[], served_label=[])
    same_task = labels["labels"].map(lambda names: list(names) == task.label_names)
    rows = labels[same_task].copy()
    if feedback.empty:
        rows["rating"] = np.nan
        rows["correction"] = -1
        rows["served_label"] = None
        return rows
    fb = on_time(rows, feedback, window_s).set_index("request_id")
    rows["rating"] = rows["request_id"].map(fb["rating"])
    rows["served_label"] = rows["request_id"].map(fb["predicted_label"])
    corrected = rows["request_id"].map(fb["corrected_label"])
    rows["correction"] = [
        task.label_names.index(c) if isinstance(c, str) and c in task.label_names else -1
        for c in corrected
    ]
    return rows
