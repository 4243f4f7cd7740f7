"""Input/prediction drift between a reference window and a current window, via Evidently 0.7.

Evidently is an implementation detail: callers get a ``DriftResult`` and never see its types.
It is imported lazily inside ``data_drift`` (the import takes seconds); nothing here does I/O
but the optional HTML report. ``on_snapshot`` hands Evidently's snapshot of the run to a caller
that stores it (``monitoring/evidently_workspace.py``), still without naming its type.

Evidently picks a different default test per column at 1,000 rows, so the numerical method, the
categorical method and the threshold are always passed explicitly, and the snapshot's metric
configs are checked to carry them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.features import LABEL_COLUMN, kinds_of
from monitoring.stattests import HOMOGENEITY, register

_VALUE_DRIFT_TYPE = "evidently:metric_v2:ValueDrift"


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift check.

    ``column_scores`` holds Evidently's per-column score: a p-value for test methods (``ks``,
    ``chi2_homogeneity``: drift when below ``threshold``) or a distance for distance methods
    (``wasserstein``, ``psi``: drift when at or above ``threshold``).
    """

    drift_share: float  # share of columns drifted, 0..1
    drifted_columns: tuple[str, ...]
    column_scores: dict[str, float]
    method: str
    reference_rows: int
    current_rows: int


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    num_method: str = "ks",
    cat_method: str = HOMOGENEITY,
    threshold: float = 0.05,
    html: Path | None = None,
    on_snapshot: Callable[[Any], None] | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column with Evidently's DataDriftPreset;
    with ``html``, Evidently's report is saved there too, and ``on_snapshot`` gets its snapshot
    (not called when no column needed Evidently).

    Numeric columns use ``num_method``; ``predicted_label`` and any other non-numeric column use
    ``cat_method``; every column uses ``threshold`` (a p-value or a distance, per method).
    A column that is constant with the same value in both frames cannot have drifted: it is not
    sent to Evidently (some tests return NaN or fail on it) and gets the method's no-drift score.
    Raises ValueError if a frame is empty, the columns differ, or a method is unknown.
    """
    register()  # the categorical test of homogeneity, under its name
    numerical, categorical = _split_columns(reference, current)
    no_drift = {
        "num": _no_drift_score(num_method, "num", threshold),
        "cat": _no_drift_score(cat_method, "cat", threshold),
    }
    stable = [
        c for c in (*numerical, *categorical) if _constant_and_equal(reference[c], current[c])
    ]
    scores = {c: no_drift["num" if c in numerical else "cat"] for c in stable}
    drifted: tuple[str, ...] = ()
    columns = [*numerical, *categorical]
    checked = [c for c in columns if c not in stable]
    if checked:
        metrics, tests = _run_report(
            reference,
            current,
            [c for c in numerical if c not in stable],
            [c for c in categorical if c not in stable],
            {"num": num_method, "cat": cat_method, "threshold": threshold},
            html,
            on_snapshot,
        )
        scores.update(
            _column_scores(metrics, checked, numerical, num_method, cat_method, threshold)
        )
        drifted = _drifted_columns(tests)
    return DriftResult(
        drift_share=len(drifted) / len(columns),
        drifted_columns=tuple(c for c in columns if c in drifted),
        column_scores={c: scores[c] for c in columns},
        method=f"num={num_method},cat={cat_method},threshold={threshold}",
        reference_rows=len(reference),
        current_rows=len(current),
    )


def _split_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Validate the frames; return (numerical, categorical) column names in reference order."""
    if reference.empty or current.empty:
        which = "reference" if reference.empty else "current"
        raise ValueError(f"{which} frame is empty; drift needs at least one row in each frame")
    if set(reference.columns) != set(current.columns):
        only_ref = sorted(set(reference.columns) - set(current.columns))
        only_cur = sorted(set(current.columns) - set(reference.columns))
        raise ValueError(
            f"columns differ: only in reference {only_ref}, only in current {only_cur}"
        )
    numerical: list[str] = []
    categorical: list[str] = []
    for column in reference.columns:
        name = str(column)
        dtype = reference[column].dtype
        is_num = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        if name == LABEL_COLUMN or not is_num:
            categorical.append(name)
        else:
            numerical.append(name)
    return numerical, categorical


def _constant_and_equal(reference: pd.Series, current: pd.Series) -> bool:
    values = pd.concat([reference, current], ignore_index=True)
    return bool(values.notna().all()) and values.nunique() == 1


def _no_drift_score(method: str, kind: str, threshold: float) -> float:
    """Score the method gives two identical samples (1.0 for p-values, 0.0 for distances).

    Also validates the method name for the column kind (raises ValueError otherwise).
    """
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    register()

    if kind == "num":
        sample = pd.Series([float(v % 7) for v in range(60)])
        column_type = ColumnType.Numerical
    else:
        sample = pd.Series(["a", "b", "c"] * 20)
        column_type = ColumnType.Categorical
    stattest = get_stattest(sample, sample, column_type, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stattest(sample, sample.copy(), column_type, threshold).drift_score)


def _run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    pinned: dict[str, Any],
    html: Path | None = None,
    on_snapshot: Callable[[Any], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run DataDriftPreset with pinned methods; return the snapshot's metrics and tests (and
    save its HTML to ``html``, hand it to ``on_snapshot``, if given)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    columns = [*numerical, *categorical]
    preset = DataDriftPreset(
        columns=columns,
        num_method=pinned["num"],
        cat_method=pinned["cat"],
        threshold=pinned["threshold"],
    )
    report = Report([preset], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(
                current[columns].reset_index(drop=True), data_definition=definition
            ),
            Dataset.from_pandas(
                reference[columns].reset_index(drop=True), data_definition=definition
            ),
        )
    if html is not None:
        snapshot.save_html(str(html))
    if on_snapshot is not None:
        on_snapshot(snapshot)
    payload = snapshot.dict()
    return list(payload["metrics"]), list(payload.get("tests", []))


def _column_scores(
    metrics: list[dict[str, Any]],
    expected_columns: list[str],
    numerical: list[str],
    num_method: str,
    cat_method: str,
    threshold: float,
) -> dict[str, float]:
    """Per-column ValueDrift scores, after checking each used the pinned method and threshold."""
    scores: dict[str, float] = {}
    for metric in metrics:
        config = metric["config"]
        if config.get("type") != _VALUE_DRIFT_TYPE:
            continue
        column = str(config["column"])
        expected = num_method if column in numerical else cat_method
        used = (config.get("method"), config.get("threshold"))
        if used[0] != expected or used[1] is None or not math.isclose(used[1], threshold):
            raise RuntimeError(
                f"Evidently ran {column!r} with method/threshold {used}, "
                f"not the pinned ({expected!r}, {threshold})"
            )
        scores[column] = float(metric["value"])
    missing = sorted(set(expected_columns) - set(scores))
    if missing:
        raise RuntimeError(f"Evidently reported no ValueDrift score for {missing}")
    return scores


def _drifted_columns(tests: list[dict[str, Any]]) -> tuple[str, ...]:
    """Columns whose ValueDrift test failed, i.e. Evidently judged them drifted."""
    drifted: list[str] = []
    for test in tests:
        params = test.get("metric_config", {}).get("params", {})
        status = getattr(test.get("status"), "value", test.get("status"))
        if params.get("type") == _VALUE_DRIFT_TYPE and str(status) == "FAIL":
            drifted.append(str(params["column"]))
    return tuple(drifted)


SMALL_WINDOW_ROWS = 1_000


def pinned_methods(method: str, threshold: float, rows: int) -> tuple[str, str, float]:
    """(numeric method, categorical method, threshold) for windows whose smaller has ``rows``.

    ``auto`` picks by size, as measured on VADER (``bench/results/drift_methods.md``: 5 draws
    a size, the largest share of drifted columns over the three kinds; 0.4 fires the drift
    trigger): at 300 rows the normed Wasserstein distance flagged movies against movies in 5
    of 5 draws at 0.1 and 1 of 5 at 0.15, K-S at p 0.01 in none while still finding 0.5-0.6
    against tweets. From 1,000 rows every choice was clean (0/5) and found 0.67-1.0 against
    tweets; a p-value test only grows more sensitive with rows (at 10,000 rows drawn with
    replacement, K-S flagged 0.6 of movies against movies, Wasserstein 0), a distance does not,
    so large windows use Wasserstein at 0.15. A categorical column (the predicted label) takes
    the chi-square test of homogeneity with a p-value method (``monitoring.stattests``: Evidently's
    own ``chisquare`` takes the reference's shares as exact and raised false alarms)."""
    if method == "ks":
        return "ks", HOMOGENEITY, threshold
    if method == "wasserstein":
        return "wasserstein", "jensenshannon", threshold
    if method != "auto":
        raise ValueError(f"method={method!r}: expected auto, ks or wasserstein")
    if rows < SMALL_WINDOW_ROWS:
        return "ks", HOMOGENEITY, 0.01
    return "wasserstein", "jensenshannon", 0.15


def drift_by_kind(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    num_method: str = "ks",
    cat_method: str = HOMOGENEITY,
    threshold: float = 0.05,
    html: Path | None = None,
    on_snapshot: Callable[[Any], None] | None = None,
) -> dict[str, DriftResult]:
    """One Evidently run over every column (``features``, ``embedding`` ``pc*`` and
    ``prediction`` columns, see ``monitoring.features``), split into a ``DriftResult`` per kind
    whose ``drift_share`` counts that kind's columns only (``html``, ``on_snapshot``: as for
    ``data_drift``)."""
    whole = data_drift(
        reference, current, num_method=num_method, cat_method=cat_method, threshold=threshold,
        html=html, on_snapshot=on_snapshot,
    )  # fmt: skip
    out = {}
    for kind, columns in kinds_of([str(c) for c in reference.columns]).items():
        drifted = tuple(c for c in whole.drifted_columns if c in columns)
        out[kind] = replace(
            whole,
            drift_share=len(drifted) / len(columns),
            drifted_columns=drifted,
            column_scores={c: whole.column_scores[c] for c in columns},
        )
    return out
