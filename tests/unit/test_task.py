"""Task files: label order, any number of labels ≥ 2, clear errors, seed file resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from distillery.task import Task, load_task

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks" / "task.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


THREE = """
name: stance
labels:
  - {name: against, prompt: "I am against it."}
  - {name: neutral, prompt: "I have no opinion."}
  - {name: favour, prompt: "I am in favour."}
"""


def test_sentiment_task_has_two_labels_in_order() -> None:
    task = load_task(ROOT / "tasks" / "sentiment.yaml")
    assert task.name == "sentiment"
    assert task.label_names == ["negative", "positive"]
    assert task.prompts == ["I hate it. It is terrible.", "I love it. It is great."]
    assert task.index("negative") == 0
    assert task.index("positive") == 1
    assert task.seed_file == (ROOT / "data" / "vader" / "movies.jsonl").resolve()


def test_three_label_task(tmp_path: Path) -> None:
    task = load_task(_write(tmp_path, THREE))
    assert task.label_names == ["against", "neutral", "favour"]
    assert [task.index(n) for n in ("favour", "against", "neutral")] == [2, 0, 1]
    assert task.prompts[1] == "I have no opinion."
    assert task.seed_file is None


def test_one_label_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nlabels:\n  - {name: only, prompt: p}\n")
    with pytest.raises(ValidationError, match=r"at least two labels, got \['only'\]"):
        load_task(path)


def test_no_labels_is_rejected() -> None:
    with pytest.raises(ValidationError, match="at least two labels"):
        Task(name="t", labels=())


def test_duplicate_label_names_are_rejected(tmp_path: Path) -> None:
    text = "name: t\nlabels:\n  - {name: a, prompt: p}\n  - {name: b, prompt: q}\n"
    path = _write(tmp_path, text + "  - {name: a, prompt: r}\n")
    with pytest.raises(ValidationError, match=r"must be unique, got \['a', 'b', 'a'\]"):
        load_task(path)


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="colour") as info:
        load_task(_write(tmp_path, THREE + "colour: blue\n"))
    assert "Extra inputs are not permitted" in str(info.value)


def test_unknown_label_key_is_rejected(tmp_path: Path) -> None:
    text = "name: t\nlabels:\n  - {name: a, prompt: p, weight: 2}\n  - {name: b, prompt: q}\n"
    with pytest.raises(ValidationError, match=r"labels\.0\.weight"):
        load_task(_write(tmp_path, text))


def test_missing_prompt_and_empty_name_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"labels\.0\.prompt"):
        load_task(_write(tmp_path, "name: t\nlabels:\n  - {name: a}\n  - {name: b, prompt: q}\n"))
    with pytest.raises(ValidationError, match=r"labels\.1\.name"):
        load_task(
            _write(
                tmp_path, "name: t\nlabels:\n  - {name: a, prompt: p}\n  - {name: '', prompt: q}\n"
            )
        )


def test_index_of_unknown_label_lists_the_labels(tmp_path: Path) -> None:
    task = load_task(_write(tmp_path, THREE))
    with pytest.raises(
        ValueError,
        match=r"unknown label 'positive'; the task has \['against', 'neutral', 'favour'\]",
    ):
        task.index("positive")


def test_relative_seed_file_resolves_against_project_root(tmp_path: Path) -> None:
    path = _write(tmp_path, THREE + "seed_file: data/seed.jsonl\n")
    assert load_task(path).seed_file == (tmp_path / "data" / "seed.jsonl").resolve()


def test_absolute_seed_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "seed.jsonl"
    path = _write(tmp_path, THREE + f"seed_file: {target}\n")
    assert load_task(path).seed_file == target


def test_relative_task_path_resolves_from_its_real_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, THREE + "seed_file: data/seed.jsonl\n")
    monkeypatch.chdir(tmp_path / "tasks")
    task = load_task(Path("task.yaml"))
    assert task.seed_file == (tmp_path / "data" / "seed.jsonl").resolve()


def test_missing_task_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml does not exist"):
        load_task(tmp_path / "nope.yaml")


def test_task_is_frozen(tmp_path: Path) -> None:
    task = load_task(_write(tmp_path, THREE))
    with pytest.raises(ValidationError):
        task.name = "other"  # type: ignore[misc]


def test_the_reply_task_is_a_generate_task_without_labels() -> None:
    task = load_task(Path(__file__).resolve().parents[2] / "tasks" / "reply.yaml")
    assert task.kind == "generate" and task.labels == ()
    assert task.generate is not None and task.generate.max_new_tokens == 48
    assert task.generate.prompt("It broke.").endswith("one sentence:\n\nIt broke.")


def test_a_generate_task_names_what_is_wrong() -> None:
    block = {"system_prompt": "s"}
    with pytest.raises(ValidationError, match=r"a generate task has no labels, got \['a'\]"):
        Task(name="t", kind="generate", generate=block, labels=[{"name": "a", "prompt": "p"}])
    with pytest.raises(ValidationError, match="a generate task needs a generate block"):
        Task(name="t", kind="generate")
    with pytest.raises(ValidationError, match="needs kind: generate, got kind: classify"):
        Task(
            name="t",
            generate=block,
            labels=[{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "q"}],
        )
    with pytest.raises(ValidationError, match=r"must contain \{text\}, got 'Reply:'"):
        Task(
            name="t", kind="generate", generate={"system_prompt": "s", "prompt_template": "Reply:"}
        )
    with pytest.raises(ValidationError, match="max_new_tokens"):
        Task(name="t", kind="generate", generate={"system_prompt": "s", "max_new_tokens": 5000})
