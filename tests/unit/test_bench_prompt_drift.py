"""The prompt-drift benchmark's windows and table (``bench.prompt_drift``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import prompt_drift as bp
from tests.conftest import DATA


def test_the_unshifted_pair_splits_one_draw_and_every_pair_shares_its_reference(
    vader_ready: Path,
) -> None:
    pairs = bp.windows(50, DATA, seed=0)
    assert set(pairs) == set(bp.PAIRS)
    same_ref, same_cur = pairs[("amazon", "amazon")]
    assert len(same_ref) == len(same_cur) == 50 and not set(same_ref) & set(same_cur)
    assert all(ref == same_ref for ref, _ in pairs.values())  # one reference for every pair
    assert pairs[("amazon", "tweets")][1] != pairs[("amazon", "movies")][1]
    assert bp.windows(50, DATA, seed=0) == pairs  # a seed draws the same prompts


def test_the_table_says_which_pair_would_fire_the_drift_trigger() -> None:
    def pair(cur: str, features: float, embedding: float) -> dict[str, Any]:
        share = {"features": features, "embedding": embedding}
        return {"reference": "amazon", "current": cur, "share": share,
                "largest": max(share.values()), "embed_s": 1.0, "test_s": 0.5}  # fmt: skip

    result = {"rows": 500, "k": 5, "trigger_threshold": 0.5,
              "pairs": [pair("amazon", 0.0, 0.2), pair("tweets", 0.8, 0.6)]}  # fmt: skip
    lines = bp.table(result).splitlines()
    assert "drift trigger (≥ 0.5)" in lines[0]
    assert lines[2].startswith("| amazon vs amazon | 0.0 | 0.2 | 0.2 | no |")
    assert lines[3].startswith("| amazon vs tweets | 0.8 | 0.6 | 0.8 | yes |")
