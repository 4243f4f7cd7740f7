"""``POST /v1/feedback`` and the feedback half of ``/readyz``: a rating, and optionally the right
label (or, on a generate task, the right reply), for an answer this service gave.

Acknowledged only once it is kept: by the broker, or, while the broker is unreachable, fsync'd
to the replica's spool and replayed in order when it is back (``feedback.delivery``). The token
is checked first (``services.access``): an answer this service never gave, gave another key, or
gave longer ago than the join window is refused with 403.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException, Request, Response

from distillery import bus
from distillery.events import Topics, encode
from distillery.settings import Settings
from feedback.delivery import Delivery
from feedback.models import FeedbackAccepted, FeedbackReadiness, FeedbackRequest
from feedback.spool import quarantined
from services.access import Access
from services.edge import json_response, parse


class FeedbackRoute:
    def __init__(
        self, settings: Settings, access: Access, secret: bytes, labels: list[str], metrics: Any,
        replica_id: str,
    ) -> None:  # fmt: skip
        self.settings, self.access, self.secret, self.labels = settings, access, secret, labels
        self.metrics = metrics
        self._replayed = 0
        self.delivery = Delivery(
            settings.kafka, settings.paths.spool_dir, replica_id, on_probe=self._on_probe
        )

    async def accept(self, request: Request, key_id: str) -> Response:
        body = await parse(request, FeedbackRequest, self.settings.serve.max_body_bytes)
        try:
            event = self.access.feedback_event(body, key_id, self.secret, self.labels)
        except HTTPException as exc:
            self.metrics.rejected.inc(tags={"route": "feedback", "status": str(exc.status_code)})
            raise
        try:
            outcome = await asyncio.to_thread(
                self.delivery.put, Topics.FEEDBACK, body.request_id, encode(event)
            )
        except OSError as exc:  # neither the broker nor the local disk took it
            raise HTTPException(
                503, f"feedback not stored, try again: {exc}", {"Retry-After": "5"}
            ) from exc
        tags = {"rating": str(body.rating), "stored": outcome,
                "model_version": str(event.model_version)}  # fmt: skip
        self.metrics.feedback.inc(tags=tags)
        return json_response(FeedbackAccepted(request_id=body.request_id), 202)

    async def readiness(self) -> FeedbackReadiness:
        """Whether feedback can be kept: the broker, the spool's backlog and its quarantine."""
        reachable = await asyncio.to_thread(bus.reachable, self.settings.kafka)
        spooling = self.delivery.spooling() or not reachable
        return FeedbackReadiness(
            broker="reachable" if reachable else "unreachable",
            feedback="spooling" if spooling else "direct",
            spool_pending_bytes=self.delivery.spool.pending(),
            spool_quarantined=await asyncio.to_thread(quarantined, self.delivery.spool_dir),
        )

    def _on_probe(self, pending_bytes: int, replayed: int, quarantined: int) -> None:
        self.metrics.spool_pending.set(pending_bytes)
        self.metrics.spool_quarantined.set(quarantined)
        if replayed > self._replayed:
            self.metrics.replayed.inc(replayed - self._replayed)
            self._replayed = replayed
