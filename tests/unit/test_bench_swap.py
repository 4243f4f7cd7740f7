"""The swap benchmark's version check: an answer may carry a version only between its promotion
and the end of the swap that replaced it."""

from __future__ import annotations

from bench.swap import check, summarise, windows

HISTORY = [
    {"ts": 100.0, "event": "promoted", "version": 1},
    {"ts": 110.0, "event": "registered", "version": 2},
    {"ts": 200.0, "event": "promoted", "version": 2},
    {"ts": 300.0, "event": "promoted", "version": 3},
]
SWAPS = [
    {"version": 2, "promoted_at": 200.0, "swapped_at": 201.0, "swap_s": 1.0},
    {"version": 3, "promoted_at": 300.0, "swapped_at": 302.0, "swap_s": 2.0},
]


def test_windows_run_from_promotion_to_the_end_of_the_replacing_swap() -> None:
    allowed = windows(HISTORY, SWAPS)
    assert allowed[1] == (100.0, 201.0)
    assert allowed[2] == (200.0, 302.0)
    assert allowed[3] == (300.0, float("inf"))


def test_check_accepts_the_old_version_during_its_swap_and_nothing_else() -> None:
    allowed = windows(HISTORY, SWAPS)
    fine = [
        (150.0, 150.1, 200, 1),
        (200.5, 200.6, 200, 1),  # v2 promoted, swap still running
        (200.5, 200.6, 200, 2),
        (350.0, 350.1, 200, 3),
        (350.0, 350.1, 503, None),  # failures are counted elsewhere
    ]
    assert check(fine, allowed) == []
    wrong = [(250.0, 250.1, 200, 1), (250.0, 250.1, 200, 3), (150.0, 150.1, 200, 9)]
    assert check(wrong, allowed) == wrong


def test_summarise_counts_failures_and_splits_calm_from_swaps() -> None:
    answers = [(float(t), t + 0.01, 200, 1 if t < 200 else 2) for t in range(190, 210)]
    answers.append((205.0, 205.5, 0, None))
    result = summarise(answers, SWAPS[:1], [])
    assert result["requests"] == 21
    assert result["failed"] == 1
    assert result["versions_seen"] == [1, 2]
    assert result["swap_max_ms"] is not None
