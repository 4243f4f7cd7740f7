"""A task as data: its labels, what each teacher is told about them, and where seed traffic
comes from.

- The embedding teacher compares a text to each label's ``prompt``.
- The LLM teacher is told ``instruction`` and each label's ``description``, and answers with one
  of the label names (``answers: words``) or of the letters A, B, C… (``answers: letters``, for
  label names whose first tokens clash).
- ``ensemble`` weighs the teachers of a mixed teacher, by backend name (``llm``, ``embedding``).

A task is ``kind: classify`` (the default: soft labels over ``labels``) or ``kind: generate``: a
chat reply to each prompt, learnt by a small LM from the teacher LLM's answers. A generate task
has no labels; its ``generate`` block holds the system prompt, the reply's token bound, the stop
strings and the template that turns a seed text into a prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Label(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    prompt: str = Field(min_length=1, description="text the zero-shot teacher compares inputs to")
    description: str | None = Field(
        default=None, min_length=1, description="what the label means, told to the LLM teacher"
    )


class Generate(BaseModel):
    """What a ``kind: generate`` task asks for: one chat turn, one reply."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system_prompt: str = Field(min_length=1, description="the system message of every chat")
    max_new_tokens: int = Field(default=48, ge=1, le=1024, description="the reply's bound")
    stop: tuple[str, ...] = Field(default=(), description="strings that end a reply early")
    prompt_template: str = Field(
        default="{text}", description="turns a seed text into the user's message ({text})"
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_text(cls, template: str) -> str:
        if "{text}" not in template:
            raise ValueError(f"prompt_template must contain {{text}}, got {template!r}")
        return template

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, stop: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in stop):
            raise ValueError(f"stop strings must be non-empty, got {list(stop)}")
        return stop

    def prompt(self, text: str) -> str:
        """The user's message for seed text ``text``."""
        return self.prompt_template.replace("{text}", text)


class Task(BaseModel):
    """Labels in a fixed order: every probability vector in the system follows this order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["classify", "generate"] = "classify"
    labels: tuple[Label, ...] = ()
    generate: Generate | None = Field(default=None, description="kind: generate only")
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

    @model_validator(mode="after")
    def _fits_its_kind(self) -> Task:
        names = [label.name for label in self.labels]
        if self.kind == "generate":
            if names:
                raise ValueError(f"a generate task has no labels, got {names}")
            if self.generate is None:
                raise ValueError("a generate task needs a generate block (system_prompt...)")
            return self
        if self.generate is not None:
            raise ValueError("a generate block needs kind: generate, got kind: classify")
        if len(names) < 2:
            raise ValueError(f"a task needs at least two labels, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        return self

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
