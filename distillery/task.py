"""A task as data: its labels, what each teacher is told about them, and where seed traffic
comes from.

- The embedding teacher compares a text to each label's ``prompt``.
- The LLM teacher is told ``instruction`` and each label's ``description``, and answers with one
  of the label names (``answers: words``) or of the letters A, B, C… (``answers: letters``, for
  label names whose first tokens clash).
- ``ensemble`` weighs the teachers of a mixed teacher, by backend name (``llm``, ``embedding``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Label(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    prompt: str = Field(min_length=1, description="text the zero-shot teacher compares inputs to")
    description: str | None = Field(
        default=None, min_length=1, description="what the label means, told to the LLM teacher"
    )


class Task(BaseModel):
    """Labels in a fixed order: every probability vector in the system follows this order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    labels: tuple[Label, ...]
    seed_file: Path | None = Field(
        default=None, description="JSON lines with a 'text' field: traffic for the first student"
    )
    instruction: str | None = Field(
        default=None, min_length=1, description="the LLM teacher's system prompt for this task"
    )
    answers: Literal["words", "letters"] = Field(
        default="words", description="the LLM teacher answers with label names or letters"
    )
    calibrate: bool = Field(
        default=False,
        description="contextual calibration of the LLM teacher (Zhao et al. 2021): divide by "
        "its label distribution on content-free inputs",
    )
    ensemble: dict[str, float] = Field(
        default_factory=dict, description="weights of the ensemble teacher's members, by backend"
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

    @field_validator("ensemble")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {name: w for name, w in weights.items() if not w > 0}
        if bad:
            raise ValueError(f"ensemble weights must be > 0, got {bad}")
        return weights

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


SLICES = ((8, "short"), (24, "medium"), (10**9, "long"))  # words, inclusive upper bound


def length_slice(text: str) -> str:
    """The input-length slice of a text: short (≤ 8 words), medium (≤ 24) or long. The gate
    checks agreement per slice; the teacher's reliability is measured per slice."""
    words = len(text.split())
    return next(name for bound, name in SLICES if words <= bound)
