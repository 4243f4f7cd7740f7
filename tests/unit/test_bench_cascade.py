"""The cascade benchmark's arithmetic (``bench.cascade``) and the README's generated figures
(``bench.headline``), on made-up runs."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cascade import Answer, CascadeRun, goals, phase_summary, table, windows
from bench.headline import table as headline


def _run() -> CascadeRun:
    """movies: the teacher answers 3 of the first 4 texts, 0 of the last 4; all delivered right,
    the teacher alone right on 7 of 8. tweets: the teacher's share rises, delivered is worse."""
    run = CascadeRun({"min_confidence": "0.7"}, phases=["movies", "tweets"])
    for i, by in enumerate([1, 1, 1, 0, 0, 0, 0, 0]):
        run.answers.append(Answer(float(i), "movies", bool(by), None, True, i != 0, 0.7))
    for i, by in enumerate([0, 0, 1, 1, 1, 1]):
        deferral = "teacher_budget" if i == 0 else None
        run.answers.append(Answer(10.0 + i, "tweets", bool(by), deferral, i % 2 == 0, True, 0.7))
    return run


def test_each_phase_reports_the_teachers_share_falling_or_not() -> None:
    movies, tweets = phase_summary(_run())
    assert (movies["share_first"], movies["share_last"]) == (1.0, 0.0)
    assert movies["delivered"] == 1.0 and movies["teacher"] == 7 / 8
    assert tweets["share_first"] == 0.0 and tweets["share_last"] == 1.0
    assert tweets["not_deferred"]["teacher_budget"] == 1
    verdicts = goals([movies, tweets])
    share, quality = verdicts.values()
    assert share == {"movies": True, "tweets": False}
    assert quality == {"movies": True, "tweets": False}  # 0.5 delivered against 1.0


def test_windows_split_each_phase_by_time() -> None:
    points = windows(_run(), window_s=4.0)
    assert [(p["phase"], p["texts"]) for p in points] == [("movies", 4), ("movies", 4),
                                                          ("tweets", 4), ("tweets", 2)]  # fmt: skip
    assert points[0]["teacher_share"] == 0.75 and points[1]["teacher_share"] == 0.0


def test_the_table_names_the_goals_and_the_offered_threshold() -> None:
    run = _run()
    run.offered = [{"t_s": 5.0, "version": 2, "threshold": 0.83, "coverage": 0.4,
                    "lower_bound": 0.951, "target": 0.95}]  # fmt: skip
    text = table(run, phase_summary(run))
    assert "| movies | 8 | 100% → 0% |" in text and "tweets no" in text
    assert "last offered 0.830 for v2" in text


def test_the_readme_figures_come_from_the_results_files(tmp_path: Path) -> None:
    swap = {"swaps": [{}, {}], "clients": 8, "failed": 0, "requests": 100, "wrong_version": 1,
            "provenance": {"commit": "abc1234567", "date": "2026-12-01"}}  # fmt: skip
    (tmp_path / "swap.json").write_text(json.dumps(swap))
    text = headline(tmp_path)
    assert "2 promotions under 8 clients: 0 of 100 requests failed, 1 answered by a wrong" in text
    assert "| no | `abc1234567`, 2026-12-01 |" in text
    assert "serving" not in text  # no results file, no row


def test_the_labeler_row_is_met_only_when_both_teachers_are(tmp_path: Path) -> None:
    labeler = {"labeler_per_s": 80.0, "raw_teacher_per_s": 84.0, "ratio": 0.952, "goal": 0.9,
               "llm": {"labeler_per_s": 0.8, "raw_teacher_per_s": 1.0, "ratio": 0.8}}  # fmt: skip
    (tmp_path / "labeler.json").write_text(json.dumps(labeler))
    text = headline(tmp_path)
    assert "LLM over HTTP: 0.8 against 1.0, 0.8 | ≥ 0.9 | no |" in text
    labeler["llm"]["ratio"] = 0.95  # type: ignore[index]
    (tmp_path / "labeler.json").write_text(json.dumps(labeler))
    assert "0.95 | ≥ 0.9 | yes |" in headline(tmp_path)
    del labeler["llm"]
    (tmp_path / "labeler.json").write_text(json.dumps(labeler))
    assert "alone, 0.952 | ≥ 0.9 | yes |" in headline(tmp_path)
