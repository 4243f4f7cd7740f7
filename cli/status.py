"""``distillery status``: the running loop in a few lines.

The status is ``GET /v1/status`` (the scheduler's view, ``monitoring.scheduler.Scheduler.status``),
read by ``cli.api_client`` without a Ray connection. ``summary`` is pure: the status in, lines out.
"""

from __future__ import annotations

import time
from typing import Any


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    seconds = max(0.0, now - ts)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _rollout(status: dict[str, Any], now: float) -> list[str]:
    running = status.get("rollout")
    if running is None:
        return ["rollout   none"]
    paused = " (paused)" if running.get("paused") else ""
    line = (
        f"rollout   v{running['candidate']} vs v{running['stable']}: {running['stage']}{paused}, "
        f"stage began {_ago(running.get('stage_started_at'), now)}"
    )
    verdict = status.get("rollout_verdict") or {}
    checks = [
        f"    {c.get('state', '?'):7} {c.get('detail') or c.get('name')}"
        for c in verdict.get("checks", [])
    ]
    return [
        line,
        *([f"    verdict: {verdict['reason']}"] if verdict.get("reason") else []),
        *checks,
    ]


def _round(status: dict[str, Any]) -> list[str]:
    progress = status.get("round_progress")
    lines = []
    if status.get("round_running"):
        done = "" if not progress else f": epoch {progress['epoch']}/{progress['epochs']}, "
        done += "" if not progress else f"{100 * progress['done']:.0f}% done"
        lines.append(f"round     running{done}")
    last = status.get("last_round")
    if last:
        trigger = (last.get("trigger") or {}).get("kind", "?")
        lines.append(
            f"last round v{last['version']} ({trigger}): {last['outcome']}, gate: {last['reason']}"
        )
    return lines


def _drift(status: dict[str, Any]) -> str:
    drift = status.get("drift") or {}
    shares = drift.get("share") or {}
    if not shares:
        return "drift     not measured yet"
    parts = ", ".join(f"{kind} {share:.2f}" for kind, share in sorted(shares.items()))
    return f"drift     drifted share by kind: {parts} (v{drift.get('version')})"


def _trigger(status: dict[str, Any]) -> str:
    decision = status.get("trigger")
    if decision is None:
        return "triggers  not decided yet"
    fired = f"fires: {decision['kind']}" if decision.get("fire") else "quiet"
    return f"triggers  {fired}: {decision['reason']}"


def _teacher(status: dict[str, Any]) -> list[str]:
    teacher = status.get("teacher") or {}
    line = f"teacher   {teacher.get('teacher_id') or teacher.get('kind')}: {teacher.get('state')}"
    if teacher.get("last_error"):
        line += f" (last error: {teacher['last_error']})"
    return [line, *([f"    {teacher['note']}"] if teacher.get("note") else [])]


def _trust(status: dict[str, Any]) -> list[str]:
    """The teacher's measured reliability and the keys, most reliable first (five shown)."""
    trust = status.get("trust")
    if not trust:
        return []
    teacher = trust["teacher"]
    lines = [
        f"trust     {trust['mode']}: teacher reliability {teacher['reliability']:.2f} (weight "
        f"{teacher['weight']:.2f}, {teacher['comparisons']:.0f} human labels)"
    ]
    for key in trust["keys"][:5]:
        mark = "trusted" if key["trusted"] else ("reliable" if key["above_floor"] else "ignored")
        if not key["trusted"] and key["weight"] > 0 and not key["above_floor"]:
            mark = "weighed"
        lines.append(
            f"  key {key['source']:<10} reliability {key['reliability']:.2f}  weight "
            f"{key['weight']:.2f}  {key['labels']} labels  {mark}"
        )
    if len(trust["keys"]) > 5:
        lines.append(f"  … {len(trust['keys']) - 5} more keys (`distillery keys list`)")
    return lines


def _cascade(status: dict[str, Any]) -> list[str]:
    """The cascade's default and the threshold offered for the serving student, with its
    guarantee (``training.selective``)."""
    cascade = status.get("cascade")
    if not cascade:
        return []
    default = cascade["min_confidence"]
    now = f"default min_confidence {default:g}" if default else "off by default"
    offered = cascade.get("offered")
    if not offered:
        return [f"cascade   {now}; no threshold offered yet (none before a gate)"]
    share = f"{offered['target']:.3f} accuracy on the texts it answers"
    if offered["threshold"] is None:
        return [
            f"cascade   {now}; no min_confidence keeps v{cascade['version']} at {share} "
            f"({offered['rows']} gate rows): the teacher would answer everything"
        ]
    return [
        f"cascade   {now}; offered for v{cascade['version']}: min_confidence "
        f"{offered['threshold']:.3f} keeps the student at ≥ {share} with probability "
        f"{1 - offered['delta']:.2f} (measured {offered['accuracy']:.3f}, bound "
        f"{offered['lower_bound']:.3f}); the student answers {offered['coverage']:.0%} of "
        f"{offered['rows']} gate rows"
    ]


def summary(status: dict[str, Any], now: float | None = None) -> str:
    """A readable page of the status: serving version, rollout and its checks, labels since the
    last round, round progress, drift, triggers, the teacher, and the last error."""
    now = time.time() if now is None else now
    replicas = status.get("replicas") or {}
    serving = sorted({f"v{v}" for v in replicas.values()}) or ["no replica reported"]
    lines = [
        f"serving   v{status.get('current_version')} (replicas answer with "
        f"{', '.join(serving)}; {len(status.get('versions') or [])} versions registered)",
        *_rollout(status, now),
        f"labels    {status.get('labels_since_last_round', 0)} since the last round "
        f"({status.get('minutes_since_last_round', 0):.1f} min ago)",
        *_round(status),
        _drift(status),
        _trigger(status),
        *_teacher(status),
        *_trust(status),
        *_cascade(status),
    ]
    if status.get("last_error"):
        lines.append(f"error     {status['last_error']}")
    return "\n".join(lines)
