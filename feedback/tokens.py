"""Feedback tokens: proof that a request id, version and label were really served by us, to
which API key, and when.

token = "{model_version}.{key_id}.{issued}.{label}.{hex HMAC-SHA256(secret,
request_id|model_version|label|key_id|issued)}", ``issued`` in whole Unix seconds. Any replica
checks it with the shared secret alone, so feedback needs no shared state; nobody can rate (or
correct) an answer the service never gave, an answer given to another key, or one older than
the join window (``services.app`` refuses those with 403 and the reason).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from distillery.files import write_atomic

OPEN_KEY = "open"  # the key id of answers given without an API key (open mode)


@dataclass(frozen=True)
class Served:
    """What a valid token vouches for."""

    model_version: int
    label: str
    key_id: str = OPEN_KEY
    issued: int = 0  # Unix seconds


def _mac(secret: bytes, request_id: str, served: Served) -> str:
    message = f"{request_id}|{served.model_version}|{served.label}|{served.key_id}|{served.issued}"
    # surrogatepass: a lone surrogate (never in a JSON body the edge accepts) signs, not raises
    return hmac.new(secret, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def sign(
    secret: bytes,
    request_id: str,
    model_version: int,
    label: str,
    key_id: str = OPEN_KEY,
    issued: float | None = None,
) -> str:
    served = Served(model_version, label, key_id, int(time.time() if issued is None else issued))
    head = f"{served.model_version}.{served.key_id}.{served.issued}.{served.label}"
    return f"{head}.{_mac(secret, request_id, served)}"


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def verify(secret: bytes, request_id: str, token: str) -> Served | None:
    """What ``token`` vouches for if it is valid for ``request_id``, else None."""
    parts = token.split(".", 3)
    if len(parts) != 4:
        return None
    version, key_id, issued = _number(parts[0]), parts[1], _number(parts[2])
    label, _, mac = parts[3].rpartition(".")
    if version is None or issued is None or not key_id or not label or not mac.isascii():
        return None  # (compare_digest raises on non-ASCII text: a 500 instead of a 403)
    served = Served(version, label, key_id, issued)
    if not hmac.compare_digest(_mac(secret, request_id, served), mac):
        return None
    return served


def load_secret(configured: str | None, state_dir: Path, name: str = "feedback_secret") -> bytes:
    """The configured secret, else one kept in ``state_dir/name`` (created 0600): the feedback
    HMAC key, or (``name="operator_token"``) the admin API's bearer token."""
    if configured:
        return configured.encode()
    path = state_dir / name
    if not path.exists():
        write_atomic(path, secrets.token_hex(32).encode(), mode=0o600)
    return path.read_text().strip().encode()
