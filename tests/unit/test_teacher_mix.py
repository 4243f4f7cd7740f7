"""The labeler's ensemble follows the shares a round wrote to ``state/trust.json``
(services.teacher_mix): re-mixed once per new estimate, the task file's weights until then."""

from __future__ import annotations

import os
from pathlib import Path

from feedback import trust_report
from feedback.trust_report import SourceTrust, TrustModel
from models.ensemble import EnsembleTeacher
from services.teacher_mix import MixFollower
from tests.unit.test_ensemble_trust import Fixed


def _source(name: str, share: float | None = None) -> SourceTrust:
    return SourceTrust(
        source=name, reliability=0.8, weight=0.6, agreements=8, comparisons=10, labels=10,
        share=share,
    )  # fmt: skip


def _estimate(shares: dict[str, float | None]) -> TrustModel:
    members = [_source(name, share) for name, share in shares.items()]
    return TrustModel(keys=[], teacher=_source("t"), teacher_cells=[], n_labels=10, members=members)


def _touch_later(path: Path) -> None:
    """A new modification time, as a round's later write has (filesystems tick coarsely)."""
    stamp = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))


def test_the_mix_follows_each_new_estimate_and_nothing_else(tmp_path: Path) -> None:
    ensemble = EnsembleTeacher([(Fixed("a", [0.9, 0.1]), 0.5), (Fixed("b", [0.2, 0.8]), 0.5)])
    follower = MixFollower(tmp_path)
    assert not follower.follow(ensemble)  # no estimate yet: the task file's weights
    assert ensemble.weights == [0.5, 0.5]
    trust_report.save(tmp_path, _estimate({"a": None, "b": None}))  # too few human labels
    assert follower.follow(ensemble)  # the first estimate read: the mix in use is now known
    assert ensemble.weights == [0.5, 0.5] and follower.weights == {"a": 0.5, "b": 0.5}
    trust_report.save(tmp_path, _estimate({"a": 0.1, "b": 0.9}))
    _touch_later(tmp_path / trust_report.FILENAME)
    assert follower.follow(ensemble)
    assert ensemble.weights == [0.1, 0.9] and follower.weights == {"a": 0.1, "b": 0.9}
    ensemble.weights = [0.5, 0.5]  # the file unchanged: not read again
    assert not follower.follow(ensemble) and ensemble.weights == [0.5, 0.5]


def test_an_unreadable_estimate_leaves_the_mix_and_a_plain_teacher_is_left_alone(
    tmp_path: Path,
) -> None:
    ensemble = EnsembleTeacher([(Fixed("a", [0.9, 0.1]), 0.5), (Fixed("b", [0.2, 0.8]), 0.5)])
    follower = MixFollower(tmp_path)
    trust_report.save(tmp_path, _estimate({"a": 0.2, "b": 0.8}))
    assert follower.follow(ensemble) and ensemble.weights == [0.2, 0.8]
    (tmp_path / trust_report.FILENAME).write_text("{not json")
    _touch_later(tmp_path / trust_report.FILENAME)
    assert not follower.follow(ensemble) and ensemble.weights == [0.2, 0.8]
    assert not MixFollower(tmp_path).follow(Fixed("a", [0.9, 0.1]))  # no ensemble: nothing to mix
