"""The operator page's data (``GET /v1/dashboard``), assembled from what the scheduler knows.

Pure assembly: the scheduler's status, the watch's series, per-version quality and reports,
and the registry's versions and history. The page (``services/dashboard.html``) draws it.
"""

from __future__ import annotations

import time
from typing import Any

from distillery.task import Task
from monitoring.status import Status
from training.registry import Registry, VersionMeta

ROUNDS = 20
EVENTS = 30
OUTCOMES = {"promoted": "promoted", "retired": "promoted", "candidate": "candidate"}


def round_row(meta: VersionMeta) -> dict[str, Any]:
    """One registered version as a round: what triggered it, its gate and how it ended."""
    trigger = meta.trigger
    return {
        "version": meta.version,
        "created": meta.created,
        "trigger": None if trigger is None else trigger.kind,
        "trigger_value": None if trigger is None else trigger.value,
        "reason": "" if trigger is None else trigger.reason,
        "outcome": OUTCOMES.get(meta.status, meta.status),
        "gate": None if meta.gate is None else meta.gate.model_dump(mode="json"),
        "online": {stage: v.reason for stage, v in meta.online.items()},
    }


def assemble(
    status: Status, watch: dict[str, Any], registry: Registry, task: Task
) -> dict[str, Any]:
    """The ``/v1/dashboard`` payload (schema in ``services/dashboard.html``'s header)."""
    metas = [registry.get(v) for v in registry.versions()[-ROUNDS:]][::-1]  # newest first
    quality = {q["version"]: q for q in watch["versions"]}
    versions = [
        {"version": m.version, "status": m.status, "created": m.created,
         **{k: v for k, v in quality.get(m.version, {}).items() if k != "version"}}
        for m in metas
    ]  # fmt: skip
    dumped = status.model_dump(mode="json")
    return {
        "generated_at": time.time(),
        "task": task.name,
        "labels": list(task.label_names),
        **{k: dumped[k] for k in SHOWN},
        "series": watch["series"],
        "versions": versions,
        "rounds": [round_row(m) for m in metas],
        "trigger": _trigger(status),
        "drift": watch["drift"],
        "reports": watch["reports"],
        "events": registry.history()[-EVENTS:][::-1],
    }


# what the page shows of the status as it is
SHOWN = (
    "current_version", "rollout", "rollout_verdict", "round_running", "round_progress",
    "last_error", "trust",
)  # fmt: skip


def _trigger(status: Status) -> dict[str, Any] | None:
    if status.trigger is None:
        return None
    signals = status.signals
    values = {
        "labels": status.labels_since_last_round,
        "minutes": status.minutes_since_last_round,
        **{k: None if signals is None else getattr(signals, k)
           for k in ("drift", "disagreement", "negative_share")},
    }  # fmt: skip
    return {**status.trigger.model_dump(mode="json"), "values": values}
