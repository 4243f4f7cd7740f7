"""bench.generate_dpo's report: rows named by arm, and each DPO arm's chrF against SFT alone as
a paired difference with its standard error."""

from __future__ import annotations

from bench.generate_dpo import paired, table


def _row(weight: float | None, each: list[float]) -> dict[str, object]:
    return {"dpo_weight": weight, "chrf_each": each, "chrf": sum(each) / len(each),
            "rated_bad": 0.25, "logp": -0.8, "train_s": 1.0}  # fmt: skip


def test_paired_difference_and_its_standard_error() -> None:
    got = paired(_row(1.0, [50.0, 60.0, 70.0]), _row(0.0, [48.0, 60.0, 66.0]))
    assert got.startswith("+2.00 ± 1.15 ") and "3 paired prompts" in got


def test_the_table_names_every_arm_and_judges_dpo_against_sft() -> None:
    result = {
        "rows": [_row(None, [20.0, 30.0]), _row(0.0, [50.0, 60.0]), _row(1.0, [52.0, 59.0])],
        "sizes": {"train": 48, "eval": 2, "pairs": 30},
        "settings": {"bad_below": 30.0, "epochs": 2, "lr": 5e-5, "beta": 0.1, "seed": 0},
    }
    text = table(result)
    for name in ("never retrained", "SFT (dpo_weight 0)", "SFT + DPO, dpo_weight 1"):
        assert f"| {name} |" in text
    assert "30 of the never-retrained student's replies" in text
    assert "- dpo_weight 1 against SFT alone: chrF +0.50 ± 1.50" in text
