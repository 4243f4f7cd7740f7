"""The HTTP edge: bounded body reads (413), one pydantic parse (422 naming the field), 503 on
timeouts; driven through real Starlette requests, no server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError

from feedback.models import FeedbackRequest, PredictRequest
from services.edge import answer, body_schema, json_response, parse, read_body, within


def _request(chunks: list[bytes], headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": raw}
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return Request(scope, receive)


def test_body_within_the_limit_is_read_whole() -> None:
    body = asyncio.run(read_body(_request([b"ab", b"cd"]), limit=4))
    assert body == b"abcd"


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request = _request([b"x"], {"Content-Length": "5000"})
    with pytest.raises(HTTPException) as err:
        asyncio.run(read_body(request, limit=4096))
    assert err.value.status_code == 413
    assert "5000" in err.value.detail and "4096" in err.value.detail


def test_streamed_body_over_the_limit_is_refused() -> None:
    with pytest.raises(HTTPException) as err:
        asyncio.run(read_body(_request([b"abc", b"def"]), limit=4))
    assert err.value.status_code == 413
    assert "4" in err.value.detail


def test_parse_returns_the_model() -> None:
    parsed = asyncio.run(parse(_request([b'{"text": ["a", "b"]}']), PredictRequest, 1024))
    assert parsed.texts() == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"text": 5}', "text"),
        (b'{"txt": "x"}', "txt"),
        (b'{"text": ', "json"),
        (b"", "json"),
    ],
)
def test_parse_errors_name_the_field_in_fastapis_shape(body: bytes, field: str) -> None:
    with pytest.raises(RequestValidationError) as err:
        asyncio.run(parse(_request([body]), PredictRequest, 1024))
    errors = err.value.errors()
    assert errors and all(e["loc"][0] == "body" for e in errors)
    assert field in str(errors).lower()


def test_feedback_rating_out_of_range_is_named() -> None:
    body = b'{"request_id": "r", "feedback_token": "t", "rating": 9}'
    with pytest.raises(RequestValidationError) as err:
        asyncio.run(parse(_request([body]), FeedbackRequest, 1024))
    assert err.value.errors()[0]["loc"] == ("body", "rating")


def test_within_returns_the_result_in_time() -> None:
    async def quick() -> int:
        return 7

    assert asyncio.run(within(quick(), 1.0, "work")) == 7


def test_within_turns_a_timeout_into_503_with_retry_after() -> None:
    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(HTTPException) as err:
        asyncio.run(within(slow(), 0.01, "prediction"))
    assert err.value.status_code == 503
    assert err.value.headers == {"Retry-After": "1"}
    assert "prediction" in err.value.detail and "0.01" in err.value.detail


def test_json_response_and_body_schema() -> None:
    response = json_response(PredictRequest(text="hi"), 202)
    assert response.status_code == 202
    assert response.body == (
        b'{"text":"hi","allow_training":true,"client_key":null,"min_confidence":null,'
        b'"teacher_timeout_ms":null}'
    )
    schema = body_schema(PredictRequest)["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["text"]


def _bare_request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/predict", "headers": []})


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (HTTPException(429, "over the limit", {"Retry-After": "3"}), 429, "over the limit"),
        (RequestValidationError([{"loc": ("body", "text"), "msg": "bad"}]), 422, None),
    ],
)
def test_the_lean_route_answers_errors_in_fastapis_shapes(
    error: Exception, status: int, detail: str | None
) -> None:
    async def handler(request: Request) -> Any:
        raise error

    response = asyncio.run(answer(handler, _bare_request()))
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    if detail is None:
        assert body["detail"][0]["loc"] == ["body", "text"]
    else:
        assert body == {"detail": detail} and response.headers["retry-after"] == "3"


def test_the_lean_route_turns_a_crash_into_a_plain_500() -> None:
    async def handler(request: Request) -> Any:
        raise RuntimeError("boom")

    response = asyncio.run(answer(handler, _bare_request()))
    assert response.status_code == 500 and response.body == b"Internal Server Error"
