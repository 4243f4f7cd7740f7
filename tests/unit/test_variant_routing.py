"""``services.slots.Variant.answers``: which requests the rollout candidate answers, the one test
the predict route and the chat route share."""

from __future__ import annotations

from services.slots import Variant
from training.rollout import takes_candidate


def test_a_canary_answers_its_sticky_share_and_a_shadow_answers_none() -> None:
    canary = Variant(object(), 2, "canary", 0.3, "r2-1")
    keys = [f"client-{i}" for i in range(400)]
    taken = [k for k in keys if canary.answers(k)]
    assert taken == [k for k in keys if takes_candidate(0.3, "r2-1", k)]
    assert 0.2 < len(taken) / len(keys) < 0.4
    assert all(canary.answers(k) for k in taken)  # the same client, the same side
    shadow = Variant(object(), 2, "shadow", 1.0, "r2-1")
    assert not any(shadow.answers(k) for k in keys)
    assert Variant(object(), 2, "canary", 1.0, "r2-1").answers(None)
