"""Replay against forgetting: a fixed-size, uniform sample of all older labelled traffic.

Each round offers the reservoir the labelled rows that have left the recent window since the
last round; Algorithm R (Vitter 1985, "Random Sampling with a Reservoir", ACM TOMS 11(1)) keeps
every row ever offered with the same probability ``capacity / seen``, in bounded memory however
long the service runs. The round then replays ``replay_ratio × recent`` rows drawn from it. The
reservoir lives in ``state/replay/`` (Parquet rows + a JSON count, both written atomically).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distillery.files import write_atomic, write_frame


@dataclass(frozen=True)
class Reservoir:
    capacity: int
    seen: int  # rows ever offered
    horizon_ts: float  # rows with ts ≤ this have been offered
    rows: pd.DataFrame  # at most ``capacity`` of them


def empty(capacity: int) -> Reservoir:
    if capacity < 1:
        raise ValueError(f"reservoir capacity must be ≥ 1, got {capacity}")
    return Reservoir(capacity, 0, float("-inf"), pd.DataFrame())


def offer(reservoir: Reservoir, rows: pd.DataFrame, rng: np.random.Generator) -> Reservoir:
    """Algorithm R over ``rows`` (in their order): the k-th row ever offered replaces a random
    kept row with probability capacity / k once the reservoir is full."""
    if rows.empty:
        return reservoir
    kept = list(range(len(reservoir.rows)))  # indices into the old rows, then new ones (≥ n_old)
    n_old, seen = len(reservoir.rows), reservoir.seen
    for i in range(len(rows)):
        seen += 1
        if len(kept) < reservoir.capacity:
            kept.append(n_old + i)
            continue
        slot = int(rng.integers(0, seen))  # uniform in [0, seen)
        if slot < reservoir.capacity:
            kept[slot] = n_old + i
    pool = pd.concat([reservoir.rows, rows], ignore_index=True)
    horizon = max(reservoir.horizon_ts, float(rows["ts"].max()))
    return Reservoir(reservoir.capacity, seen, horizon, pool.iloc[kept].reset_index(drop=True))


def advance(
    reservoir: Reservoir, rows: pd.DataFrame, until_ts: float, rng: np.random.Generator
) -> Reservoir:
    """Offer the rows that aged out since the last call: horizon < ts ≤ ``until_ts``, oldest
    first; the horizon moves to ``until_ts``."""
    fresh = rows[(rows["ts"] > reservoir.horizon_ts) & (rows["ts"] <= until_ts)]
    moved = offer(reservoir, fresh.sort_values("ts", kind="stable"), rng)
    return Reservoir(moved.capacity, moved.seen, max(moved.horizon_ts, until_ts), moved.rows)


def load(folder: Path, capacity: int) -> Reservoir:
    meta, data = folder / "reservoir.json", folder / "reservoir.parquet"
    if not meta.is_file():
        return empty(capacity)
    state = json.loads(meta.read_text())
    rows = pd.read_parquet(data) if data.is_file() else pd.DataFrame()
    if capacity < len(rows):  # the setting shrank: keep a uniform subset
        rows = rows.sample(n=capacity, random_state=0).reset_index(drop=True)
    return Reservoir(capacity, int(state["seen"]), float(state["horizon_ts"]), rows)


def save(reservoir: Reservoir, folder: Path) -> None:
    """Rows first, then the count that refers to them: a crash between keeps the old count,
    which only makes the next offer slightly more generous to new rows."""
    write_frame(folder / "reservoir.parquet", reservoir.rows)
    state = {
        "seen": reservoir.seen,
        "horizon_ts": reservoir.horizon_ts,
        "rows": len(reservoir.rows),
    }
    write_atomic(folder / "reservoir.json", json.dumps(state).encode())
