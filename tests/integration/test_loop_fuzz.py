"""Every route's body fuzzed against the live loop (real Serve, broker, scheduler): lone
surrogates, NUL, huge numbers, deep nesting, wrong types, raw bytes and the largest request the
bounds admit. Every answer is 2xx or 4xx, never 5xx, and a 4xx says why.

It runs after test_loop.py (by name), so the shared loop starts there, not while the modules
with stacks of their own run. Nothing here may change the loop the other tests share:
predictions opt out of training, tokens are invented or mangled (no feedback is accepted), and
the operator token is only sent with an action that does not exist.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cli.launcher import Running

pytestmark = pytest.mark.integration
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

surrogates = st.sampled_from(["\\ud800", "\\udfff", "a\\udc80b", "\\ud83d"])  # JSON escapes
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=10).map(lambda t: t + "\x00" + t),
    st.just(""),
    st.just("x" * 2_001),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)  # fmt: skip


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def _escaped(field: str) -> st.SearchStrategy[bytes]:
    """``{field: "<a lone surrogate>"}``: valid JSON syntax, not valid Unicode."""
    return surrogates.map(lambda s: f'{{"{field}": "{s}"}}'.encode())


def _deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


def bodies(shaped: st.SearchStrategy[dict[str, Any]], field: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        shaped.map(_raw),
        values.map(_raw),
        st.binary(max_size=200),
        _escaped(field),
        st.sampled_from([_deep(10_000), b'{"rating": 1e999999}', b"9" * 5_000, b"", b"null"]),
        st.integers(min_value=10**20, max_value=10**60).map(lambda n: b'{"rating": %d}' % n),
    )


texts = odd_text | st.lists(odd_text, max_size=70) | values
predict_bodies = bodies(
    st.fixed_dictionaries(
        {"text": texts, "allow_training": st.just(False)},
        optional={"client_key": values, "extra": values},
    ),
    "text",
)
feedback_bodies = bodies(
    st.fixed_dictionaries(
        {"request_id": odd_text | values, "feedback_token": odd_text | values},
        optional={"rating": values, "corrected_label": values, "extra": values},
    ),
    "feedback_token",
)


def _post(
    loop: Running, path: str, body: bytes, headers: dict[str, bytes] | None = None
) -> httpx.Response:
    sent = {"content-type": b"application/json", **(headers or {})}
    return httpx.post(f"{loop.api_url}{path}", content=body, headers=sent, timeout=60)


def _segment(text: str) -> str:
    """``text`` as one percent-encoded path segment (lone surrogates included)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="") or "x"


def _assert_4xx_at_worst(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code < 400:
        return
    if response.headers.get("content-type", "").startswith("application/json"):
        assert response.json()["detail"], response.text[:500]  # the service says why
    else:  # refused by the HTTP proxy in front, before the service saw it
        assert response.status_code == 400 and response.text, response.text[:500]


@FUZZ
@given(body=predict_bodies)
def test_predict_answers_any_body_with_2xx_or_a_4xx_reason(loop: Running, body: bytes) -> None:
    _assert_4xx_at_worst(_post(loop, "/v1/predict", body))


def test_the_largest_predict_the_bounds_admit_is_answered(loop: Running) -> None:
    most = {"text": ["é" * 2_000] * 64, "allow_training": False}
    response = _post(loop, "/v1/predict", _raw(most))
    assert response.status_code == 200 and len(response.json()["predictions"]) == 64
    one_more = {"text": ["é" * 2_000] * 65, "allow_training": False}
    refused = _post(loop, "/v1/predict", _raw(one_more))
    assert refused.status_code == 422 and "65 texts" in refused.json()["detail"]


@FUZZ
@given(body=feedback_bodies)
def test_feedback_answers_any_body_with_a_4xx_reason(loop: Running, body: bytes) -> None:
    response = _post(loop, "/v1/feedback", body)
    _assert_4xx_at_worst(response)
    assert response.status_code != 202, body  # no token here was ever issued


def _answer(loop: Running) -> dict[str, Any]:
    body = _raw({"text": "a fuzzed film", "allow_training": False})
    answer: dict[str, Any] = _post(loop, "/v1/predict", body).json()["predictions"][0]
    return answer


@settings(FUZZ, max_examples=60)
@given(cut=st.integers(min_value=0, max_value=120), extra=odd_text)
def test_a_mangled_real_token_is_refused_with_403_or_422(
    loop: Running, cut: int, extra: str
) -> None:
    answer = _answer(loop)
    token = answer["feedback_token"]
    mangled = token[:cut] + extra + token[cut + 1 :]
    assume(mangled != token)  # that would be a real rating, kept by the loop the tests share
    body = {"request_id": answer["request_id"], "feedback_token": mangled, "rating": 3}
    response = _post(loop, "/v1/feedback", _raw(body))
    assert response.status_code in (403, 422), response.text


@settings(FUZZ, max_examples=60)
@given(action=odd_text, authorization=odd_text, body=feedback_bodies)
def test_admin_answers_any_request_with_a_4xx_reason(
    loop: Running, action: str, authorization: str, body: bytes
) -> None:
    token = (loop.settings.paths.state_dir / "operator_token").read_text().strip()
    if action not in ("promote", "rollback", "pause", "resume"):  # the real token: 404 only
        path = "/v1/admin/" + _segment(action)
        bearer = {"authorization": f"Bearer {token}".encode()}
        _assert_4xx_at_worst(_post(loop, path, body, bearer))
    # any Latin-1 header value (HTTP's own charset), control characters aside
    header = authorization.encode("latin-1", "ignore").strip()
    wrong = {"authorization": header} if header and all(32 <= b != 127 for b in header) else {}
    _assert_4xx_at_worst(_post(loop, "/v1/admin/pause", body, wrong))


@settings(FUZZ, max_examples=40)
@given(name=odd_text)
def test_a_report_of_any_name_is_found_or_404(loop: Running, name: str) -> None:
    response = httpx.get(f"{loop.api_url}/v1/reports/{_segment(name)}", timeout=30)
    assert response.status_code in (200, 404), (response.status_code, response.text[:300])
