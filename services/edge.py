"""The HTTP edge of the hot routes: a bounded body read, one pydantic parse, one JSON dump.

FastAPI's own body handling parses JSON in Python, validates, then validates and encodes the
response again; on a 2×128 student that machinery costs as much CPU as the forward pass. Here the
body is read once (refused with 413 past ``limit`` bytes, before it is all read when the client
sends a Content-Length), parsed by pydantic-core from bytes, and the response is dumped by
pydantic-core to bytes. The OpenAPI schema still documents both models.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)
ECHO_CHARS = 200  # of an offending value quoted back in a 422
T = TypeVar("T")

ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "the request body is larger than serve.max_body_bytes"},
    422: {"description": "a field breaks the contract or a bound; the detail names it"},
    503: {"description": "not ready, or timed out; retry after the Retry-After header"},
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; HTTP 413 naming the limit if it holds more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body: {declared} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body: more than {limit} bytes, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, model: type[Model], limit: int) -> Model:
    """The body as ``model``; 413 past ``limit`` bytes, 422 with FastAPI's error shape."""
    return validate(await read_body(request, limit), model)


def validate(body: bytes, model: type[Model]) -> Model:
    """``body`` (JSON bytes) as ``model``; 422 with FastAPI's error shape, each error's
    ``input`` made safe to send back (``echo``)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        for error in errors:
            error["loc"] = ("body", *error["loc"])
            error["input"] = echo(error.get("input"))
        raise RequestValidationError(errors) from None


def echo(value: Any, limit: int = ECHO_CHARS) -> Any:
    """``value`` as a 422 may quote it: JSON-safe and short. Found by fuzzing the live routes:
    a body that is not UTF-8 (pydantic quotes the raw bytes) and a number too large for a float
    (``inf``) each made FastAPI's error handler raise, a 500 instead of the 422; and the whole
    body, up to ``max_body_bytes``, was echoed back."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k)[:limit]: echo(v, limit) for k, v in list(value.items())[:20]}
    if isinstance(value, list | tuple):
        return [echo(v, limit) for v in value[:20]]
    return value


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    return Response(body.model_dump_json(), status_code, media_type="application/json")


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that documents ``model`` as the JSON request body of a route."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def within(work: Awaitable[T], timeout_s: float, what: str) -> T:
    """``work``, or HTTP 503 with ``Retry-After`` once ``timeout_s`` seconds have passed."""
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TimeoutError:
        raise HTTPException(
            503, f"{what} took longer than {timeout_s:g}s; try again", {"Retry-After": "1"}
        ) from None


def require_bearer(authorization: str | None, token: bytes) -> None:
    """401 without ``Authorization: Bearer <token>``, 403 with the wrong token."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "operator token missing", {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token):
        raise HTTPException(403, "operator token is wrong")


class LeanAPI(FastAPI):
    """FastAPI, except that the routes named in ``lean`` skip its middleware stack, routing and
    dependency solving: ``(method, path) → the replica method`` that answers, called with a
    plain Starlette ``Request``; its errors get FastAPI's own response shapes (``answer``).
    The route stays declared on FastAPI too, for OpenAPI and for anything not matched here.

    Measured (``bench.serve``, issue 18): on a replica at 64 clients, about 45% of the CPU went
    to uvicorn, Ray's direct-ingress wrapper and Starlette/FastAPI, ~30 frames of ~1% each."""

    lean: dict[tuple[str, str], str]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self.lean.get((scope.get("method", ""), scope.get("path", "")))
        if scope["type"] != "http" or name is None:
            return await super().__call__(scope, receive, send)
        from ray import serve

        handler = getattr(serve.get_replica_context().servable_object, name)
        response = await answer(handler, Request(scope, receive))
        await response(scope, receive, send)


async def answer(handler: Any, request: Request) -> Response:
    """``handler(request)``, with FastAPI's default error responses: ``{"detail": …}`` and the
    exception's headers for an ``HTTPException``, 422 with the errors for a validation error,
    a plain 500 for anything else (logged)."""
    try:
        response: Response = await handler(request)
        return response
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    except RequestValidationError as exc:
        return JSONResponse({"detail": jsonable_encoder(exc.errors())}, 422)
    except Exception:
        log.exception("%s %s failed", request.method, request.url.path)
        return Response("Internal Server Error", 500, media_type="text/plain")
