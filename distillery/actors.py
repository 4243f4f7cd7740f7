"""The loop's named Ray actors: their names, their namespace, and how a caller finds one.

``distillery up`` starts the scheduler and the labeler under these names (``cli.launcher``);
replicas, round workers, the operator API and ``/readyz`` find them here, so that no package
imports the one above it to reach an actor. The ``Protocol``s say what each caller may send.
"""

from __future__ import annotations

from typing import Any, Protocol

from distillery.contracts import RoundProgress, TeacherState, VariantReport

NAMESPACE = "distillery"
SCHEDULER = "distillery-scheduler"
LABELER = "distillery-labeler"


class SchedulerReports(Protocol):
    """What the layers below tell the scheduler (``monitoring.scheduler.Scheduler``)."""

    def report_serving(self, replica: str, version: int) -> None: ...
    def report_variants(self, replica: str, report: VariantReport) -> None: ...
    def report_progress(self, progress: RoundProgress) -> None: ...


def find_actor(name: str) -> Any | None:
    """A running named actor's handle (call its methods with ``.remote``), or None."""
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def find_scheduler() -> Any | None:
    """The running scheduler actor's handle, or None when there is none (yet)."""
    return find_actor(SCHEDULER)


def find_labeler() -> Any | None:
    """The running labeler actor's handle, or None (e.g. a labeler run as its own process)."""
    return find_actor(LABELER)


def _public(health: Any) -> TeacherState:
    shown: TeacherState = health.public()  # models.teacher.TeacherHealth, without importing up
    return shown


def labeler_health(timeout_s: float = 1.0) -> TeacherState | None:
    """The labeler's teacher health (``TeacherHealth.public()``: id, breaker state, last error),
    or None when no labeler actor answers within ``timeout_s`` (one run as its own process, or
    busy). Callers say "unknown" then: a teacher that cannot be asked only delays labels."""
    import ray

    try:
        actor = find_labeler()
        if actor is None:
            return None
        return _public(ray.get(actor.teacher_health.remote(), timeout=timeout_s))
    except Exception:  # no such actor, or it is busy
        return None


async def labeler_health_async(timeout_s: float = 1.0) -> TeacherState | None:
    """``labeler_health`` for a coroutine (the ingress's ``/readyz``)."""
    import asyncio

    try:
        actor = find_labeler()
        if actor is None:
            return None
        return _public(await asyncio.wait_for(actor.teacher_health.remote(), timeout=timeout_s))
    except Exception:  # no such actor, or it is busy
        return None
