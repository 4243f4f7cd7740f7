"""Feedback tokens: proof that a request id, version and label were really served by us.

token = "{model_version}.{label}.{hex HMAC-SHA256(secret, request_id|model_version|label)}". Any
replica checks it with the shared secret alone, so feedback needs no shared state, and nobody can
rate (or correct) an answer that the service never gave.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from distillery.files import write_atomic


@dataclass(frozen=True)
class Served:
    """What a valid token vouches for."""

    model_version: int
    label: str


def _mac(secret: bytes, request_id: str, model_version: int, label: str) -> str:
    message = f"{request_id}|{model_version}|{label}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, request_id: str, model_version: int, label: str) -> str:
    return f"{model_version}.{label}.{_mac(secret, request_id, model_version, label)}"


def verify(secret: bytes, request_id: str, token: str) -> Served | None:
    """The served (version, label) if ``token`` is valid for ``request_id``, else None."""
    version_text, _, rest = token.partition(".")
    label, _, mac = rest.rpartition(".")
    if not (version_text.isascii() and version_text.isdigit()) or not label or not mac:
        return None
    expected = _mac(secret, request_id, int(version_text), label)
    if not hmac.compare_digest(expected, mac):
        return None
    return Served(int(version_text), label)


def load_secret(configured: str | None, state_dir: Path, name: str = "feedback_secret") -> bytes:
    """The configured secret, else one kept in ``state_dir/name`` (created 0600): the feedback
    HMAC key, or (``name="operator_token"``) the admin API's bearer token."""
    if configured:
        return configured.encode()
    path = state_dir / name
    if not path.exists():
        write_atomic(path, secrets.token_hex(32).encode(), mode=0o600)
    return path.read_text().strip().encode()
