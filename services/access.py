"""Who is calling: API keys, per-key rate limits, and the feedback token's key and age.

Mode (``serve.auth``): ``keys`` asks every call for ``Authorization: Bearer <key>`` (or
``X-API-Key``); ``open`` takes anonymous calls, as key ``open``, and is refused unless the API
listens on loopback; ``auto`` is ``open`` on loopback until the first key exists, else ``keys``.
Each key has its own limits for predict and for feedback (a token bucket per replica holding
``limit / replicas`` a minute, so the service as a whole allows about ``limit``); past them the
call gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from distillery.events import FeedbackEvent
from distillery.settings import Settings, is_loopback
from feedback.keys import KeyRecord, KeyRing
from feedback.keys import load as load_keys
from feedback.models import FeedbackRequest
from feedback.tokens import OPEN_KEY, Served, verify

log = logging.getLogger(__name__)


@dataclass
class Bucket:
    """A token bucket: ``rate`` per second, holding at most ``burst``."""

    rate: float
    burst: float
    level: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 if a call may go now (and takes its token), else the seconds until one may."""
        now = time.monotonic()
        if self.level < 0:
            self.level = self.burst
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate


class Access:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ring = KeyRing(settings.paths.state_dir)
        self.replicas = max(settings.serve.num_replicas, 1)
        self._buckets: dict[tuple[str, str], Bucket] = {}
        if self.mode() == "open":
            log.warning(
                "API in open mode: anyone who reaches %s may predict and rate; create a key "
                "(`distillery keys create NAME`) to require keys",
                settings.serve.host,
            )

    def mode(self) -> str:
        return self.resolve(self.settings, self.ring.any_active())

    @staticmethod
    def resolve(settings: Settings, any_key: bool | None = None) -> str:
        """``open`` or ``keys``: what ``serve.auth`` means with the keys on file now."""
        auth = settings.serve.auth
        if auth != "auto":
            return auth
        if any_key is None:
            any_key = any(k.active for k in load_keys(settings.paths.state_dir).keys)
        return "keys" if any_key or not is_loopback(settings.serve.host) else "open"

    def identify(self, request: Request, route: str) -> str:
        """The caller's key id (``open`` in open mode); 401 or 429 with the reason."""
        if self.mode() == "open":
            return OPEN_KEY
        record = self._record(request)
        limit = record.predict_per_min if route == "predict" else record.feedback_per_min
        if limit is not None:
            wait = self._bucket(record.id, route, limit).take()
            if wait > 0:
                raise HTTPException(
                    429,
                    f"API key {record.id}: over its {route} limit of {limit:g}/min",
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
        return record.id

    def _record(self, request: Request) -> KeyRecord:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        key = key or request.headers.get("x-api-key", "").strip()
        if not key:
            raise HTTPException(
                401,
                "API key: missing (send `Authorization: Bearer <key>`; keys come from "
                "`distillery keys create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        record, reason = self.ring.check(key)
        if record is None:
            raise HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})
        return record

    def _bucket(self, key_id: str, route: str, per_min: float) -> Bucket:
        rate = per_min / 60.0 / self.replicas
        bucket = self._buckets.get((key_id, route))
        if bucket is None or bucket.rate != rate:
            bucket = Bucket(rate, burst=max(1.0, per_min / self.replicas / 6))  # 10 s of calls
            self._buckets[(key_id, route)] = bucket
        return bucket

    def feedback_event(
        self, body: FeedbackRequest, key_id: str, secret: bytes, labels: list[str]
    ) -> FeedbackEvent:
        """The event for a feedback body from ``key_id``; 403 (a token this service never
        issued, another key's, an expired one) or 422 (a label the task lacks) with the reason."""
        served = verify(secret, body.request_id, body.feedback_token)
        if served is None:
            raise HTTPException(
                403, "feedback_token: not a token this service issued for request_id"
            )
        problem = self.token_problem(served, key_id)
        if problem:
            raise HTTPException(403, problem)
        if body.corrected_label is not None and body.corrected_label not in labels:
            known = f"is not one of {labels}" if labels else "given, but the task generates"
            raise HTTPException(422, f"corrected_label: {body.corrected_label!r} {known}")
        if body.corrected_reply is not None and labels:
            raise HTTPException(422, "corrected_reply: only a generate task's answers have one")
        return FeedbackEvent(
            request_id=body.request_id, rating=body.rating, corrected_label=body.corrected_label,
            predicted_label=served.label, model_version=served.model_version, key_id=key_id,
            corrected_reply=body.corrected_reply,
        )  # fmt: skip

    def token_problem(self, served: Served, key_id: str) -> str | None:
        """Why feedback from ``key_id`` on this answer is refused (403), or None."""
        if served.key_id != key_id:
            return f"feedback_token: issued to API key {served.key_id}, not to {key_id}"
        age = time.time() - served.issued
        window = self.settings.store.join_window_s
        if age > window:
            return f"feedback_token: issued {age:.0f}s ago, past the {window:g}s join window"
        return None
