"""Ray Train rounds on the live cluster: two workers at fractional CPUs beside Serve, and a
round whose workers are killed in its second epoch resumes from that epoch's checkpoint."""

from __future__ import annotations

import json

import pytest

from cli.launcher import Running
from feedback.examples import join, read_kind, read_labels
from models.student import Student
from training.data import build_round
from training.registry import Registry
from training.round import run_round

pytestmark = pytest.mark.integration


def test_two_workers_killed_in_epoch_2_resume_from_the_epoch_1_checkpoint(
    loop: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = loop.settings.train.model_copy(
        update={"num_workers": 2, "worker_cpus": 0.4, "epochs": 3, "max_failures": 1}
    )
    settings = loop.settings.model_copy(update={"train": train})
    registry = Registry(settings.paths.registry_dir)
    rows = join(
        read_labels(settings.paths.store_dir),
        read_kind(settings.paths.store_dir, "feedback"),
        loop.task,
    )
    data = build_round(rows, 0.0, 2_000, 0.0, 0.2)  # every stored label: epochs of seconds
    parent = registry.path(registry.current() or 1)
    monkeypatch.setenv("DISTILLERY_FAILPOINT", "train.second_epoch")
    checkpoint, metrics = run_round(settings, loop.task, data, parent, "resume-test")
    assert metrics["epoch"] == 3
    assert metrics["resumed_at_epoch"] == 1  # the new worker group started after epoch 1
    assert json.loads((checkpoint / "train_metrics.json").read_text())["resumed_at_epoch"] == 1
    student = Student.load(checkpoint, settings.serve.max_tokens)
    assert student.labels == loop.task.label_names
    assert student.predict_proba(["a fine film"]).shape == (1, len(loop.task.label_names))
