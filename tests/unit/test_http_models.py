"""The HTTP contract: bounds checked with reasons that name the field, strict request bodies."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from feedback.models import FeedbackRequest, PredictRequest, check_texts


def test_texts_within_bounds_pass() -> None:
    assert check_texts(["ok"], max_items=1, max_chars=2) is None
    assert check_texts(["a", "bb", "  c  "], max_items=3, max_chars=5) is None


def test_empty_list_is_named() -> None:
    assert check_texts([], 4, 10) == "text: must hold at least one text"


def test_too_many_texts_names_count_and_limit() -> None:
    assert check_texts(["a"] * 5, 4, 10) == "text: 5 texts in one request, the limit is 4"


@pytest.mark.parametrize("blank", ["", " ", "\n\t "])
def test_whitespace_only_single_text_is_named_text(blank: str) -> None:
    assert check_texts([blank], 4, 10) == "text: empty or whitespace-only text"


def test_whitespace_only_text_in_a_list_names_its_index() -> None:
    assert check_texts(["fine", "  "], 4, 10) == "text[1]: empty or whitespace-only text"


def test_over_long_text_names_length_and_limit() -> None:
    assert check_texts(["x" * 11], 4, 10) == "text: 11 characters, the limit is 10"
    assert check_texts(["ok", "fine", "y" * 12], 4, 10) == "text[2]: 12 characters, the limit is 10"
    assert check_texts(["x" * 10], 4, 10) is None


def test_first_bad_text_is_reported() -> None:
    assert check_texts(["x" * 20, ""], 4, 10) == "text[0]: 20 characters, the limit is 10"


def test_predict_request_accepts_one_text_or_a_list() -> None:
    assert PredictRequest(text="hello").texts() == ["hello"]
    request = PredictRequest.model_validate({"text": ["a", "b"], "allow_training": False})
    assert request.texts() == ["a", "b"]
    assert request.allow_training is False
    assert PredictRequest(text="x").allow_training is True


@pytest.mark.parametrize("text", [5, 1.5, None, ["a", 3], [None], {"t": "a"}, True])
def test_predict_request_rejects_non_strings(text: object) -> None:
    with pytest.raises(ValidationError, match="text"):
        PredictRequest.model_validate({"text": text})


def test_predict_request_rejects_extra_fields() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted") as info:
        PredictRequest.model_validate({"text": "a", "model": "other"})
    assert info.value.errors()[0]["loc"] == ("model",)


def test_predict_request_from_json_rejects_numbers() -> None:
    with pytest.raises(ValidationError):
        PredictRequest.model_validate_json('{"text": 12}')


def _feedback(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"request_id": "r-1", "feedback_token": "1.positive.ab", "rating": 3}
    body.update(changes)
    return body


def test_feedback_request_accepts_valid_body() -> None:
    request = FeedbackRequest.model_validate(_feedback(rating=1, corrected_label="negative"))
    assert (request.rating, request.corrected_label) == (1, "negative")
    assert FeedbackRequest.model_validate(_feedback(rating=5)).corrected_label is None


@pytest.mark.parametrize("rating", [0, 6, -1])
def test_feedback_request_rejects_rating_out_of_range(rating: int) -> None:
    with pytest.raises(ValidationError) as info:
        FeedbackRequest.model_validate(_feedback(rating=rating))
    assert info.value.errors()[0]["loc"] == ("rating",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", ""),
        ("request_id", "r" * 201),
        ("request_id", 7),
        ("feedback_token", ""),
        ("feedback_token", "t" * 401),
        ("corrected_label", 1),
        ("extra", "x"),
    ],
)
def test_feedback_request_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        FeedbackRequest.model_validate(_feedback(**{field: value}))
    assert info.value.errors()[0]["loc"] == (field,)
