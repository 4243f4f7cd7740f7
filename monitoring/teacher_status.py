"""What ``status`` says about the teacher: who it is, whether it is up, and whether the version
serving learnt from it. A teacher or prompt that changed since the serving version's round is
named, with what rounds do with the old teacher's labels (``DISTILLERY_TEACHER_OLD_LABELS``)."""

from __future__ import annotations

from distillery.actors import labeler_health
from distillery.contracts import TeacherState
from distillery.settings import TeacherSettings
from distillery.task import Task
from models.factory import configured_teacher_id
from monitoring.status import TeacherView
from training.registry import Registry


def current_teacher_id(cfg: TeacherSettings, task: Task) -> str | None:
    """The configured teacher's id, else (a model only its endpoint knows) the labeler's."""
    configured = configured_teacher_id(cfg, task)
    if configured is not None:
        return configured
    health = labeler_health()
    return None if health is None else health.teacher_id


def teacher_status(
    cfg: TeacherSettings, task: Task, registry: Registry, health: TeacherState | None
) -> TeacherView:
    configured = configured_teacher_id(cfg, task)
    live = None if health is None else health.teacher_id
    current = live or configured
    version = registry.current()
    learnt: dict[str, int] = {}
    if version is not None:
        learnt = dict(registry.get(version).lineage.teachers)
    changed = bool(current and learnt and current not in learnt)
    note = (
        f"the teacher is now {current}; v{version} learnt from {sorted(learnt)}; old labels: "
        f"{cfg.old_labels}"
    )
    return TeacherView(
        kind=cfg.kind,
        teacher_id=current,
        state="unknown" if health is None else health.state,
        last_error=None if health is None else health.last_error,
        serving_version_learnt_from=learnt,
        changed=changed,
        note=note if changed else None,
        old_labels=cfg.old_labels,
    )
