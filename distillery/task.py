"""A task as data: its labels, the teacher's prompt per label, and where seed traffic comes from."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Label(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    prompt: str = Field(min_length=1, description="text the zero-shot teacher compares inputs to")


class Task(BaseModel):
    """Labels in a fixed order: every probability vector in the system follows this order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    labels: tuple[Label, ...]
    seed_file: Path | None = Field(
        default=None, description="JSON lines with a 'text' field: traffic for the first student"
    )

    @field_validator("labels")
    @classmethod
    def _at_least_two_unique(cls, labels: tuple[Label, ...]) -> tuple[Label, ...]:
        names = [label.name for label in labels]
        if len(names) < 2:
            raise ValueError(f"a task needs at least two labels, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        return labels

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def prompts(self) -> list[str]:
        return [label.prompt for label in self.labels]

    def index(self, label: str) -> int:
        """Position of ``label``; ``ValueError`` naming the valid labels otherwise."""
        try:
            return self.label_names.index(label)
        except ValueError:
            raise ValueError(f"unknown label {label!r}; the task has {self.label_names}") from None


def load_task(path: Path) -> Task:
    """Read a task file (YAML). A relative ``seed_file`` is resolved against the project root."""
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    task = Task.model_validate(yaml.safe_load(path.read_text()))
    if task.seed_file is not None and not task.seed_file.is_absolute():
        root = path.resolve().parent.parent
        task = task.model_copy(update={"seed_file": (root / task.seed_file).resolve()})
    return task
