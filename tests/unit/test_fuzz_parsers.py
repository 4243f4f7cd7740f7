"""Property tests (hypothesis) on what parses untrusted input at the HTTP edge: any body is a
model or a 422 in FastAPI's shape, any token is vouched for or refused, never an exception."""

from __future__ import annotations

import json

import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from feedback.models import AdminAction, FeedbackRequest, PredictRequest, check_texts
from feedback.tokens import sign, verify
from services.edge import validate

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
SECRET = b"s" * 32
anything = st.text(st.characters(), max_size=60)  # surrogates included
tokenish = st.lists(st.one_of(anything, st.sampled_from(["1", "0", "positive", "."])), max_size=6)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | anything,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(anything, inner, max_size=3),
    max_leaves=10,
)


def _json(value: object) -> bytes:
    """JSON text as a client might send it: raw UTF-8, lone surrogates passed through."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@PROPERTY
@given(
    model=st.sampled_from([PredictRequest, FeedbackRequest, AdminAction]),
    body=st.one_of(st.binary(max_size=300), json_values.map(_json)),
)
def test_any_body_is_a_model_or_a_422_never_another_error(
    model: type[BaseModel], body: bytes
) -> None:
    try:
        assert isinstance(validate(body, model), model)
    except RequestValidationError as exc:
        assert all(error["loc"][0] == "body" for error in exc.errors())
        # what FastAPI's handler then sends: it must encode (a failure here was a 500)
        sent = json.dumps({"detail": jsonable_encoder(exc.errors())}, allow_nan=False)
        assert len(sent) < 20_000


@PROPERTY
@given(request_id=anything, token=st.one_of(anything, tokenish.map(".".join)))
def test_any_token_is_refused_or_vouched_for_never_an_exception(
    request_id: str, token: str
) -> None:
    assert verify(SECRET, request_id, token) is None  # none of these was signed


@PROPERTY
@given(request_id=anything, label=anything.filter(bool), version=st.integers(1, 10**6))
def test_a_signed_token_verifies_for_its_request_only(
    request_id: str, label: str, version: int
) -> None:
    token = sign(SECRET, request_id, version, label)
    served = verify(SECRET, request_id, token)
    assert served is not None and (served.model_version, served.label) == (version, label)
    assert verify(SECRET, request_id + "x", token) is None
    assert verify(b"t" * 32, request_id, token) is None


@PROPERTY
@given(texts=st.lists(anything, max_size=70), limit=st.integers(1, 64))
def test_check_texts_names_the_field_or_passes(texts: list[str], limit: int) -> None:
    reason = check_texts(texts, limit, 20)
    broken = not texts or len(texts) > limit or any(not t.strip() or len(t) > 20 for t in texts)
    assert (reason is not None) == broken
    assert reason is None or reason.startswith("text")


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{", b'{"text": "\xc3"}', b'{"text": 1e999999}', b'{"rating": -1e999}', b"[" * 500],
)
def test_a_body_that_broke_the_error_handler_gets_a_422_it_can_send(body: bytes) -> None:
    """Found by tests/integration/test_loop_fuzz.py on the live service: each of these was a 500."""
    with pytest.raises(RequestValidationError) as caught:
        validate(body, PredictRequest)
    sent = json.dumps({"detail": jsonable_encoder(caught.value.errors())}, allow_nan=False)
    assert "body" in sent and len(sent) < 2_000


def test_a_lone_surrogate_escape_is_a_422_not_a_500() -> None:
    with pytest.raises(RequestValidationError, match="surrogate"):
        validate(b'{"text": "\\udc80"}', PredictRequest)
