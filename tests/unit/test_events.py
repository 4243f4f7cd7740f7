"""Wire contracts: round trips, decode errors that name the model and field, dead letters."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from distillery.events import (
    DeadLetter,
    DecodeError,
    FeedbackEvent,
    SampledPrediction,
    TeacherLabel,
    Topics,
    dead_letter,
    decode,
    encode,
)

SAMPLED = SampledPrediction(
    request_id="r-1", ts=1.5, text="a fine film", student_probs=[0.2, 0.8], model_version=3
)
FEEDBACK = FeedbackEvent(
    request_id="r-2",
    ts=2.5,
    rating=1,
    corrected_label="negative",
    predicted_label="positive",
    model_version=3,
)
LABEL = TeacherLabel(
    request_id="r-3",
    ts=3.5,
    text="awful",
    labels=["negative", "neutral", "positive"],
    teacher_logits=[4.0, 0.5, -2.0],
    teacher_probs=[0.9, 0.08, 0.02],
    student_probs=[0.4, 0.3, 0.3],
    model_version=1,
    source_partition=2,
    source_offset=41,
)
DEAD = dead_letter(Topics.LABELS, 1, 7, "bad", b"\x00\xffnot json")


@pytest.mark.parametrize("event", [SAMPLED, FEEDBACK, LABEL, DEAD], ids=lambda e: type(e).__name__)
def test_encode_decode_round_trip(event: BaseModel) -> None:
    raw = encode(event)
    assert isinstance(raw, bytes)
    assert json.loads(raw)["schema_version"] == 1
    back = decode(type(event), raw)
    assert back == event
    assert type(back) is type(event)


def test_sampled_reason_defaults_to_uniform_and_survives_round_trip() -> None:
    assert SAMPLED.reason == "uniform"
    feedback = SAMPLED.model_copy(update={"reason": "feedback"})
    assert decode(SampledPrediction, encode(feedback)).reason == "feedback"


def test_topics_are_versioned_and_distinct() -> None:
    assert len(set(Topics.ALL)) == 4
    assert all(topic.endswith(".v1") for topic in Topics.ALL)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe"])
def test_invalid_json_raises_decode_error_naming_the_model(raw: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^SampledPrediction: payload: ") as info:
        decode(SampledPrediction, raw)
    assert isinstance(info.value, ValueError)


def test_missing_field_names_model_and_field() -> None:
    body = json.loads(encode(LABEL))
    del body["teacher_logits"]
    with pytest.raises(DecodeError, match=r"^TeacherLabel: teacher_logits: Field required"):
        decode(TeacherLabel, json.dumps(body).encode())


def test_wrong_type_in_a_list_names_the_index() -> None:
    body = json.loads(encode(SAMPLED))
    body["student_probs"] = [0.5, "high"]
    with pytest.raises(DecodeError, match=r"^SampledPrediction: student_probs\.1: "):
        decode(SampledPrediction, json.dumps(body).encode())


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_unknown_schema_version_is_rejected(version: object) -> None:
    body = json.loads(encode(FEEDBACK))
    body["schema_version"] = version
    with pytest.raises(DecodeError, match=r"^FeedbackEvent: unknown schema_version ") as info:
        decode(FeedbackEvent, json.dumps(body).encode())
    assert repr(version) in str(info.value)


def test_unknown_field_is_rejected() -> None:
    body = json.loads(encode(FEEDBACK))
    body["surprise"] = True
    with pytest.raises(DecodeError, match=r"^FeedbackEvent: surprise: "):
        decode(FeedbackEvent, json.dumps(body).encode())


@pytest.mark.parametrize("rating", [0, 6])
def test_rating_out_of_range_is_rejected(rating: int) -> None:
    body = json.loads(encode(FEEDBACK))
    body["rating"] = rating
    with pytest.raises(DecodeError, match=r"^FeedbackEvent: rating: "):
        decode(FeedbackEvent, json.dumps(body).encode())


def test_decoding_as_the_wrong_event_type_fails() -> None:
    with pytest.raises(DecodeError, match=r"^TeacherLabel: "):
        decode(TeacherLabel, encode(SAMPLED))


def test_dead_letter_keeps_the_original_bytes() -> None:
    raw = b"\x00\xff{half a json"
    letter = dead_letter(Topics.FEEDBACK, 2, 99, "FeedbackEvent: payload: Invalid JSON", raw)
    assert letter.payload() == raw
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        Topics.FEEDBACK,
        2,
        99,
    )
    assert letter.reason.startswith("FeedbackEvent")
    back = decode(DeadLetter, encode(letter))
    assert back.payload() == raw
