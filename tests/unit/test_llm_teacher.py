"""The LLM teacher's pure parts: prompt, answers, soft labels from logprobs, the start-up checks,
calibration and ids; ``soft_label`` checked against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillery.task import Label, Task
from models import llm_teacher as lt
from models.ensemble import mix


def _task(**update: object) -> Task:
    task = Task(
        name="sentiment",
        instruction="You label the sentiment of texts.",
        labels=(
            Label(name="negative", prompt="bad", description="dislikes it"),
            Label(name="positive", prompt="good"),
        ),
    )
    return task.model_copy(update=update)


def test_prompt_lists_labels_with_descriptions_and_the_answer_format() -> None:
    prompt = lt.system_prompt(_task())
    assert prompt.startswith("You label the sentiment of texts.")
    assert "- negative: dislikes it" in prompt and "- positive\n" in prompt
    assert prompt.endswith("Answer with exactly one word: negative or positive.")
    letters = lt.system_prompt(_task(answers="letters"))
    assert "- A: negative: dislikes it" in letters and letters.endswith("letter: A or B.")


def test_a_task_without_instruction_is_refused_naming_the_field() -> None:
    with pytest.raises(lt.TaskFileError, match="no 'instruction'"):
        lt.system_prompt(_task(instruction=None))


def test_soft_label_sums_variants_floors_missing_labels_and_renormalises() -> None:
    top = [("positive", -0.1), ("Positive", -2.0), (" pos", -3.0), ("the", -4.0), ("neg", -9.0)]
    probs = lt.soft_label(top, ["negative", "positive"])
    pos = math.exp(-0.1) + math.exp(-2.0) + math.exp(-3.0)
    neg = math.exp(-9.0)
    assert probs is not None
    np.testing.assert_allclose(probs, [neg / (neg + pos), pos / (neg + pos)], rtol=1e-9)
    missing = lt.soft_label([("positive", -0.1), ("ok", -5.0)], ["negative", "positive"])
    assert missing is not None  # negative absent: floored at the smallest listed probability
    floor = math.exp(-5.0)
    np.testing.assert_allclose(
        missing, np.array([floor, math.exp(-0.1)]) / (floor + math.exp(-0.1))
    )
    assert lt.soft_label([("banana", -0.1), ("", -1)], ["negative", "positive"]) is None


def test_a_token_that_begins_two_answers_names_neither() -> None:
    said = ["positive", "postal"]
    assert lt.label_of("pos", said) is None
    assert lt.label_of("posi", said) == 0 and lt.label_of(" Postal.", said) == 1
    assert lt.label_of("B", ["A", "B"]) == 1


def test_first_token_check_names_the_clash_and_suggests_letters() -> None:
    ids = {"unclear": 1347, " unclear": 24416, "Unclear": 63718, "uncertain": 1347}
    first = lambda text: ids.get(text, hash(text))  # noqa: E731
    with pytest.raises(lt.TaskFileError, match=r"'unclear' and 'uncertain'.*answers: letters"):
        lt.check_first_tokens(["unclear", "uncertain"], first)
    lt.check_first_tokens(["negative", "positive"], lambda t: hash(t))
    with pytest.raises(lt.TaskFileError, match="'unclear' and 'uncertain' begin alike"):
        lt.check_prefixes(["unclear", "uncertain"])
    lt.check_prefixes(["negative", "positive"])


def test_teacher_id_names_the_model_and_changes_with_the_prompt() -> None:
    a = lt.llm_teacher_id("qwen", _task())
    assert a.startswith("llm:qwen:") and a == lt.llm_teacher_id("qwen", _task())
    assert a != lt.llm_teacher_id("qwen", _task(instruction="Label the mood."))
    assert a != lt.llm_teacher_id("qwen", _task(calibrate=True))
    assert a != lt.llm_teacher_id("other", _task())


def test_ensemble_mix_is_a_weighted_sum_of_log_probs_over_readable_members() -> None:
    a = np.log(np.array([[0.9, 0.1], [0.5, 0.5]]))
    b = np.log(np.array([[0.2, 0.8], [0.3, 0.7]]))
    readable = np.array([[True, False], [True, True]])  # member a cannot read row 1
    mixed = mix([a, b], [0.75, 0.25], readable)
    np.testing.assert_allclose(mixed[0], 0.75 * a[0] + 0.25 * b[0])
    np.testing.assert_allclose(mixed[1], b[1])
