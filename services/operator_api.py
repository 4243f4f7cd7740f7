"""The operator's routes, beside the data plane of ``services/app.py``: the scheduler's view
(``/v1/status``, ``/v1/dashboard``, drift reports), the operator page (``/dashboard``) and the
token-protected rollout actions (``/v1/admin/{action}``).

They hold no replica state: every answer comes from the scheduler actor, so any replica serves
them alike. The one thing a replica hands over is the operator token (``configure``).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from distillery.actors import find_scheduler
from distillery.contracts import OperatorAnswer
from feedback.models import AdminAction
from services.edge import ERRORS, body_schema, read_body, require_bearer, validate

router = APIRouter()
_token: dict[str, bytes] = {}  # "operator": this replica's operator token
ACTIONS = ("promote", "rollback", "pause", "resume")


def configure(operator_token: bytes) -> None:
    """Set the bearer token ``/v1/admin/*`` requires (called by each replica at start)."""
    _token["operator"] = operator_token


@functools.cache
def dashboard_page() -> str:
    """The operator page (``services/dashboard.html``), read once, on the first request."""
    return resources.files("services").joinpath("dashboard.html").read_text(encoding="utf-8")


async def ask_scheduler(method: str, *args: Any) -> Any:
    """The scheduler actor's answer to ``method(*args)``; 503 when it cannot be reached."""
    try:
        scheduler = find_scheduler()
        if scheduler is None:
            raise LookupError("no scheduler actor is running")
        return await getattr(scheduler, method).remote(*args)
    except Exception as exc:
        raise HTTPException(503, f"scheduler unavailable: {exc}", {"Retry-After": "5"}) from exc


@router.get("/v1/status")
async def status() -> Response:
    """The scheduler's view: current version, versions, labels since the last round, the last
    round's gate, drift, and the triggers' signals and decision (``monitoring.status.Status``,
    sent as its JSON: the model lives in a layer above this one)."""
    body: str = await ask_scheduler("status_json")
    return Response(body, media_type="application/json")


@router.get("/v1/dashboard")
async def dashboard_data() -> Response:
    """What /dashboard draws: versions, rollout, drift/quality series, rounds, reports
    (``monitoring.dashboard.Dashboard``, sent as its JSON)."""
    body: str = await ask_scheduler("dashboard_json")
    return Response(body, media_type="application/json")


@router.get("/v1/reports")
async def reports() -> Response:
    """Kept drift reports (Evidently HTML), newest first: name, created, url, drift share
    (``monitoring.reports.ReportListing``, sent as its JSON)."""
    body: str = await ask_scheduler("drift_reports_json")
    return Response(body, media_type="application/json")


@router.get(
    "/v1/reports/{name}",
    response_class=HTMLResponse,
    responses={404: {"description": "no drift report of that name is kept"}},
)
async def report(name: str) -> HTMLResponse:
    """One drift report, as Evidently rendered it."""
    html = await ask_scheduler("report_html", name)
    if html is None:
        raise HTTPException(404, f"no drift report named {name!r}; see /v1/reports")
    return HTMLResponse(html)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The operator page: one static file that polls ``GET /v1/dashboard`` every 5 s."""
    return HTMLResponse(dashboard_page(), headers={"Cache-Control": "no-cache"})


@router.post(
    "/v1/admin/{action}",
    openapi_extra=body_schema(AdminAction),
    responses={
        401: {"description": "no operator token: send Authorization: Bearer <token>"},
        403: {"description": "the operator token is wrong"},
        404: {"description": "action is not promote, rollback, pause or resume"},
        409: {"description": "the action does not apply now (e.g. no rollout to pause)"},
        422: ERRORS[422],
    },
)
async def admin(
    action: str, request: Request, authorization: str | None = Header(default=None)
) -> OperatorAnswer:
    """Operator actions on the rollout: ``promote`` (the candidate, or ``version``, to every
    user now), ``rollback`` (drop the candidate, or with none, go back to the version before
    the current one), ``pause`` / ``resume`` (freeze the rollout's automatic decisions).
    Needs ``Authorization: Bearer <operator token>``: ``DISTILLERY_SERVE_OPERATOR_TOKEN``,
    else the one ``distillery up`` keeps in ``state/operator_token``. Each action is kept in
    the registry's history with its reason."""
    if action not in ACTIONS:
        raise HTTPException(404, f"action: {action!r} is not promote, rollback, pause or resume")
    if "operator" not in _token:
        raise HTTPException(503, "this replica has no operator token yet", {"Retry-After": "5"})
    require_bearer(authorization, _token["operator"])
    raw = await read_body(request, 65_536)
    body = validate(raw, AdminAction) if raw.strip() else AdminAction()
    reason = f"operator (API): {body.reason}"
    result: OperatorAnswer = await ask_scheduler("operate", action, reason, body.version)
    if not result.ok:
        raise HTTPException(409, result.detail)
    return result
