"""The student-shapes benchmark's data: one phase's rows as the rounds split them, and the replay
pool from before the phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.student_shapes import phase_rows
from distillery import vader
from distillery.events import TeacherLabel
from distillery.settings import PathSettings, Settings
from feedback.store import write_shard
from training.data import in_holdout

ROOT = Path(__file__).resolve().parents[2]


def _label(i: int, text: str, ts: float) -> dict[str, object]:
    label = TeacherLabel(
        request_id=f"req-{i}", ts=ts, text=text, labels=["negative", "positive"],
        teacher_logits=[0.1, 0.9], teacher_probs=[0.3, 0.7], student_probs=[0.5, 0.5],
        model_version=1, source_partition=0, source_offset=i,
    )  # fmt: skip
    return {**label.model_dump(), "topic": "t", "partition": 0, "offset": i}


def _settings(tmp_path: Path) -> Settings:
    rows = [_vader_row("movies", i) for i in range(60)] + [_vader_row("nyt", i) for i in range(60)]
    vader.write_jsonl(rows, tmp_path / "data" / "vader")
    (tmp_path / "data" / "vader" / vader.COMPLETE_MARKER).touch()
    paths = PathSettings(
        state_dir=tmp_path / "state", data_dir=tmp_path / "data",
        task_file=ROOT / "tasks" / "sentiment.yaml",
    )  # fmt: skip
    return Settings(paths=paths)


def _vader_row(domain: str, i: int) -> vader.VaderRow:
    return vader.VaderRow(f"{domain} sentence {i}", "positive", domain, 1.0)


def test_phase_rows_split_the_phase_as_the_rounds_did_and_replay_only_older_rows(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    store = settings.paths.store_dir
    store.mkdir(parents=True)
    write_shard(store, "labels", [_label(i, f"movies sentence {i}", 100.0 + i) for i in range(60)])
    write_shard(
        store, "labels", [_label(100 + i, f"nyt sentence {i}", 500.0 + i) for i in range(60)]
    )
    train, held, older = phase_rows(settings, "nyt")
    fraction = settings.train.holdout_fraction
    assert len(train) + len(held) == 60
    assert all(in_holdout(text, fraction) for text in held["text"])
    assert not any(in_holdout(text, fraction) for text in train["text"])
    assert set(older["text"]) <= {f"movies sentence {i}" for i in range(60)}
    assert not any(in_holdout(text, fraction) for text in older["text"])
    assert len(older) > 0


def test_phase_rows_name_the_missing_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.paths.store_dir.mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"no nyt labels .* run `make bench-drift` first"):
        phase_rows(settings, "nyt")
