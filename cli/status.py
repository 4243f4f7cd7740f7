"""``distillery status``: the running loop in a few lines.

The status is ``GET /v1/status``: the scheduler's ``monitoring.status.Status`` as JSON, read back
into that model by ``cli.api_client`` without a Ray connection. ``summary`` is pure: the status
in, lines out.
"""

from __future__ import annotations

import time

from monitoring.status import CascadeView, Status, TrustView


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    seconds = max(0.0, now - ts)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _rollout(status: Status, now: float) -> list[str]:
    running = status.rollout
    if running is None:
        return ["rollout   none"]
    paused = " (paused)" if running.paused else ""
    line = (
        f"rollout   v{running.candidate} vs v{running.stable}: {running.stage}{paused}, "
        f"stage began {_ago(running.stage_started_at, now)}"
    )
    verdict = status.rollout_verdict
    if verdict is None:
        return [line]
    checks = [f"    {c.state:7} {c.detail or c.name}" for c in verdict.checks]
    return [line, *([f"    verdict: {verdict.reason}"] if verdict.reason else []), *checks]


def _round(status: Status) -> list[str]:
    progress = status.round_progress
    lines = []
    if status.round_running:
        done = "" if not progress else f": epoch {progress.epoch}/{progress.epochs}, "
        done += "" if not progress else f"{100 * progress.done:.0f}% done"
        lines.append(f"round     running{done}")
    last = status.last_round
    if last:
        trigger = last.trigger.kind if last.trigger else "?"
        lines.append(f"last round v{last.version} ({trigger}): {last.outcome}, gate: {last.reason}")
    if status.deferred:
        wait = status.deferred
        lines.append(
            f"round     deferred ({wait.reason}); next try at {wait.retry_at_labels} labels"
        )
    return lines


def _drift(status: Status) -> str:
    shares = status.drift.share if status.drift else {}
    if not shares or status.drift is None:
        return "drift     not measured yet"
    parts = ", ".join(f"{kind} {share:.2f}" for kind, share in sorted(shares.items()))
    return f"drift     drifted share by kind: {parts} (v{status.drift.version})"


def _trigger(status: Status) -> str:
    decision = status.trigger
    if decision is None:
        return "triggers  not decided yet"
    fired = f"fires: {decision.kind}" if decision.fire else "quiet"
    return f"triggers  {fired}: {decision.reason}"


def _teacher(status: Status) -> list[str]:
    teacher = status.teacher
    line = f"teacher   {teacher.teacher_id or teacher.kind}: {teacher.state}"
    if teacher.last_error:
        line += f" (last error: {teacher.last_error})"
    return [line, *([f"    {teacher.note}"] if teacher.note else [])]


def _trust(trust: TrustView | None) -> list[str]:
    """The teacher's measured reliability (and an ensemble's members, with their shares of the
    mix) and the keys, most reliable first (five shown)."""
    if trust is None:
        return []
    teacher = trust.teacher
    lines = [
        f"trust     {trust.mode}: teacher reliability {teacher.reliability:.2f} (weight "
        f"{teacher.weight:.2f}, {teacher.comparisons:.0f} human labels)"
    ]
    for member in trust.members:
        share = "task file's weight" if member.share is None else f"share {member.share:.2f}"
        lines.append(
            f"  member {member.source} reliability {member.reliability:.2f} on "
            f"{member.comparisons:.0f} human labels: {share}"
        )
    for key in trust.keys[:5]:
        mark = "trusted" if key.trusted else ("reliable" if key.above_floor else "ignored")
        if not key.trusted and key.weight > 0 and not key.above_floor:
            mark = "weighed"
        lines.append(
            f"  key {key.source:<10} reliability {key.reliability:.2f}  weight "
            f"{key.weight:.2f}  {key.labels} labels  {mark}"
        )
    if len(trust.keys) > 5:
        lines.append(f"  … {len(trust.keys) - 5} more keys (`distillery keys list`)")
    return lines


def _cascade(cascade: CascadeView) -> list[str]:
    """The cascade's default and the threshold offered for the serving student, with its
    guarantee (``training.selective``)."""
    default = cascade.min_confidence
    now = f"default min_confidence {default:g}" if default else "off by default"
    offered = cascade.offered
    if not offered:
        return [f"cascade   {now}; no threshold offered yet (none before a gate)"]
    share = f"{offered.target:.3f} accuracy on the texts it answers"
    if offered.threshold is None:
        return [
            f"cascade   {now}; no min_confidence keeps v{cascade.version} at {share} "
            f"({offered.rows} gate rows): the teacher would answer everything"
        ]
    return [
        f"cascade   {now}; offered for v{cascade.version}: min_confidence "
        f"{offered.threshold:.3f} keeps the student at ≥ {share} with probability "
        f"{1 - offered.delta:.2f} (measured {offered.accuracy or 0:.3f}, bound "
        f"{offered.lower_bound or 0:.3f}); the student answers {offered.coverage:.0%} of "
        f"{offered.rows} gate rows"
    ]


def summary(status: Status, now: float | None = None) -> str:
    """A readable page of the status: serving version, rollout and its checks, labels since the
    last round, round progress, drift, triggers, the teacher, and the last error."""
    now = time.time() if now is None else now
    serving = sorted({f"v{v}" for v in status.replicas.values()}) or ["no replica reported"]
    lines = [
        f"serving   v{status.current_version} (replicas answer with "
        f"{', '.join(serving)}; {len(status.versions)} versions registered)",
        *_rollout(status, now),
        f"labels    {status.labels_since_last_round} since the last round "
        f"({status.minutes_since_last_round:.1f} min ago)",
        *_round(status),
        _drift(status),
        _trigger(status),
        *_teacher(status),
        *_trust(status.trust),
        *_cascade(status.cascade),
    ]
    if status.last_error:
        lines.append(f"error     {status.last_error}")
    return "\n".join(lines)
