"""The operator commands' way in: the running loop's HTTP API, not a Ray connection.

``distillery status``, ``promote``, ``rollback``, ``pause`` and ``resume`` talk to the API that
``distillery up`` serves (``DISTILLERY_SERVE_HOST``/``_PORT``, or ``--url``), with the operator
token ``up`` uses (``DISTILLERY_SERVE_OPERATOR_TOKEN``, else ``state/operator_token`` under
``DISTILLERY_STATE_DIR``). So they answer in well under a second, print none of Ray's connection
chatter, and work from any machine that reaches the API.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distillery.contracts import OperatorAnswer
from distillery.settings import Settings
from monitoring.status import Status

TOKEN_FILE = "operator_token"


class APIError(RuntimeError):
    """The API could not be reached, or refused; the message names the URL and the reason."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message


def api_url(settings: Settings) -> str:
    """The loop's API as ``distillery up`` serves it (a wildcard host is asked on loopback)."""
    serve = settings.serve
    host = "127.0.0.1" if serve.host in ("0.0.0.0", "::", "") else serve.host
    return f"http://{host}:{serve.port}"


def operator_token(settings: Settings) -> str:
    """The admin API's bearer token, without creating one (only ``up`` does)."""
    if settings.serve.operator_token:
        return settings.serve.operator_token
    path: Path = settings.paths.state_dir / TOKEN_FILE
    if not path.is_file():
        raise APIError(
            f"no operator token at {path}: set DISTILLERY_SERVE_OPERATOR_TOKEN, or "
            "DISTILLERY_STATE_DIR to the folder `distillery up` runs with"
        )
    return path.read_text().strip()


def _call(method: str, url: str, timeout_s: float, **kwargs: Any) -> dict[str, Any]:
    """One JSON request with the standard library (httpx would add ~0.2 s of imports to a
    command meant to answer in well under a second)."""
    body = kwargs.get("json")
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json", **kwargs.get("headers", {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            parsed: dict[str, Any] = json.loads(answer.read())
            return parsed
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            detail = str(json.loads(text).get("detail", text))
        except ValueError:
            detail = text
        raise APIError(f"{url} answered {exc.code}: {detail}", exc.code, detail) from None
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, not JSON
        raise APIError(
            f"no distillery API at {url} ({type(exc).__name__}: {exc}); start it with "
            "`distillery up` or pass --url"
        ) from exc


def status(url: str, timeout_s: float = 5.0) -> Status:
    """The scheduler's status; a body that is not one is an ``APIError`` naming the field."""
    body = _call("GET", f"{url.rstrip('/')}/v1/status", timeout_s)
    try:
        return Status.model_validate(body)
    except ValidationError as exc:
        raise APIError(f"{url} answered a status this command cannot read: {exc}") from None


def admin(
    url: str, token: str, action: str, reason: str, version: int | None = None
) -> OperatorAnswer:
    """An operator action on the rollout (``POST /v1/admin/{action}``); a promote or rollback
    returns once every replica serves the result, so the timeout is generous."""
    body: dict[str, Any] = {"reason": reason, **({} if version is None else {"version": version})}
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{url.rstrip('/')}/v1/admin/{action}"
    answer = _call("POST", url, 180.0, json=body, headers=headers)
    try:
        return OperatorAnswer.model_validate(answer)
    except ValidationError as exc:
        raise APIError(f"{url} answered what this command cannot read: {exc}") from None
