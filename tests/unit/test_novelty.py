"""The novelty score: standardised distance to the training window, 1.0 at its 95th percentile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.novelty import Reference, fit_reference


def test_training_rows_score_above_one_about_five_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(4_000, 16)).astype(np.float32)  # (N, H)
    reference = fit_reference(train)
    fresh = rng.normal(size=(4_000, 16)).astype(np.float32)
    assert (reference.score(fresh) > 1).mean() == pytest.approx(0.05, abs=0.015)


def test_a_shifted_domain_scores_higher() -> None:
    rng = np.random.default_rng(1)
    reference = fit_reference(rng.normal(size=(2_000, 8)))
    shifted = rng.normal(loc=2.0, size=(500, 8))
    assert np.median(reference.score(shifted)) > 1.5
    assert (reference.score(shifted) > 1).mean() > 0.9


def test_score_is_scale_free_per_dimension() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(size=(1_000, 4)) * np.array([1.0, 100.0, 0.01, 5.0])
    reference = fit_reference(train)
    # one standard deviation along any axis is the same distance
    one_sd = reference.mean + np.diag(reference.scale)  # (4, 4)
    assert np.allclose(reference.distance(one_sd), 0.5, atol=1e-3)  # sqrt(1 / 4)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    reference = fit_reference(np.random.default_rng(3).normal(size=(100, 6)))
    reference.save(tmp_path)
    loaded = Reference.load(tmp_path)
    assert loaded is not None
    x = np.random.default_rng(4).normal(size=(10, 6))
    assert np.allclose(loaded.score(x), reference.score(x), atol=1e-5)
    assert Reference.load(tmp_path / "nothing") is None


def test_too_few_rows_raise_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        fit_reference(np.zeros((1, 3)))
