"""The teachers benchmark: its split, its derived teachers, and the tables the docs show."""

from __future__ import annotations

import numpy as np
import pytest

from bench import teachers as bt
from distillery.task import load_task
from tests.conftest import DATA, ROOT


def test_the_docs_hold_the_table_the_results_render() -> None:
    if not (ROOT / "bench" / "results" / "teachers.json").is_file():
        pytest.fail("bench/results/teachers.json missing: run `make bench-teachers`")
    rendered = bt.table(bt.load())
    for page in bt.PAGES:
        assert rendered in page.read_text(), f"{page}: run `python -m bench.teachers --docs`"


def test_split_is_disjoint_balanced_and_labelled_by_the_task(vader_ready: object) -> None:
    task = load_task(bt.TASKS["source"])
    evals, train = bt.split(task, DATA, 5, 40, seed=0)
    assert not set(evals.texts) & set(train.texts)
    assert len(evals.texts) == 20 and len(train.texts) == 40
    assert [task.label_names[i] for i in evals.labels] == evals.domains  # the label is the domain
    sentiment = load_task(bt.TASKS["sentiment"])
    again, _ = bt.split(sentiment, DATA, 5, 40, seed=0)
    assert again.texts == evals.texts and set(again.labels) <= {0, 1}


def test_calibration_divides_by_the_prior_and_the_ensemble_mixes_log_probs() -> None:
    probs = np.array([[0.6, 0.4], [0.9, 0.1]])
    np.testing.assert_allclose(bt.calibrated(probs, np.array([0.5, 0.5])), probs)
    skewed = bt.calibrated(probs, np.array([0.75, 0.25]))
    np.testing.assert_allclose(skewed[0], [0.6 / 0.75, 0.4 / 0.25] / np.sum([0.8, 1.6]))
    task = load_task(bt.TASKS["source"])  # ensemble weights 0.5 / 0.5
    four = np.full((1, 4), 0.25)
    sharp = np.array([[0.7, 0.1, 0.1, 0.1]])
    mixed = bt.ensemble(sharp, four, task)
    expected = np.sqrt(sharp) / np.sqrt(sharp).sum()  # a uniform member only flattens
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
