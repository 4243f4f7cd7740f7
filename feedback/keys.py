"""API keys for applications: who called, how often they may, and whether an operator trusts them.

A key reads ``dk_<id>_<secret>``: the id (8 hex) is public and is what predictions, feedback
and the trust estimate record; only SHA-256(key) is kept, in ``state/keys.json`` (0600, written
atomically). ``distillery keys create|list|revoke|trust`` edits it; the Serve replicas re-read
it when it changes (``KeyRing.refresh``), so a revoked key stops working within a few seconds
without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

from pydantic import BaseModel, Field

from distillery.files import write_atomic
from distillery.settings import Settings
from feedback import trust_report
from feedback.tokens import OPEN_KEY

FILENAME = "keys.json"
PREFIX = "dk_"


class KeyRecord(BaseModel):
    id: str = Field(pattern=r"^[0-9a-f]{8}$")
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: float = Field(default_factory=time.time)
    revoked: float | None = None
    trusted: bool = False
    predict_per_min: float | None = Field(default=None, gt=0, description="None: unlimited")
    feedback_per_min: float | None = Field(default=None, gt=0, description="None: unlimited")

    @property
    def active(self) -> bool:
        return self.revoked is None


class KeyFile(BaseModel):
    keys: list[KeyRecord] = Field(default_factory=list)


def path_of(state_dir: Path) -> Path:
    return state_dir / FILENAME


def load(state_dir: Path) -> KeyFile:
    path = path_of(state_dir)
    if not path.is_file():
        return KeyFile()
    return KeyFile.model_validate_json(path.read_text())


def save(state_dir: Path, keys: KeyFile) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path_of(state_dir), keys.model_dump_json(indent=1).encode(), mode=0o600)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(
    state_dir: Path,
    name: str,
    trusted: bool = False,
    predict_per_min: float | None = None,
    feedback_per_min: float | None = None,
) -> tuple[KeyRecord, str]:
    """A new key: its record (kept) and the key itself (shown once, never stored)."""
    keys = load(state_dir)
    taken = {k.id for k in keys.keys}
    key_id = secrets.token_hex(4)
    while key_id in taken:
        key_id = secrets.token_hex(4)
    key = f"{PREFIX}{key_id}_{secrets.token_hex(24)}"
    record = KeyRecord(
        id=key_id, name=name, sha256=digest(key), trusted=trusted,
        predict_per_min=predict_per_min, feedback_per_min=feedback_per_min,
    )  # fmt: skip
    save(state_dir, KeyFile(keys=[*keys.keys, record]))
    return record, key


def update(state_dir: Path, key_id: str, **changes: object) -> KeyRecord:
    """Change one key's record (``revoked``, ``trusted``); ``KeyError`` names an unknown id."""
    keys = load(state_dir)
    found = next((k for k in keys.keys if k.id == key_id), None)
    if found is None:
        known = ", ".join(k.id for k in keys.keys) or "none"
        raise KeyError(f"no API key with id {key_id!r} (known: {known})")
    changed = found.model_copy(update=changes)
    save(state_dir, KeyFile(keys=[changed if k.id == key_id else k for k in keys.keys]))
    return changed


def key_id_of(key: str) -> str | None:
    """The id part of ``dk_<id>_<secret>``, or None if the key is not of that form."""
    if not key.startswith(PREFIX):
        return None
    key_id, _, secret = key[len(PREFIX) :].partition("_")
    return key_id if len(key_id) == 8 and secret else None


def trusted_keys(settings: Settings) -> set[str]:
    """Key ids an operator marked trusted (``distillery keys trust``) or listed in the
    settings (``DISTILLERY_TRUST_TRUSTED_KEYS``)."""
    marked = {k.id for k in load(settings.paths.state_dir).keys if k.trusted and k.active}
    return marked | settings.trust.trusted_ids()


def rating_keys(settings: Settings) -> set[str] | None:
    """Keys whose ratings feed the rollout's feedback checks and the negative-feedback trigger:
    trusted keys, keys the last round's estimate put above the floor, and the open key in open
    mode when ``trust.open_trusted``; None with trust off (everyone's count)."""
    if settings.trust.mode == "off":
        return None
    keys = trusted_keys(settings)
    if settings.trust.open_trusted:
        keys.add(OPEN_KEY)
    estimate = trust_report.load(settings.paths.state_dir)
    if estimate is not None:
        keys |= {k.source for k in estimate.keys if k.above_floor}
    return keys


class KeyRing:
    """The keys a replica accepts, re-read when the file changes (checked every ``every_s``)."""

    def __init__(self, state_dir: Path, every_s: float = 2.0) -> None:
        self.path = path_of(state_dir)
        self.every_s = every_s
        self._checked = 0.0
        self._stamp: float | None = None
        self._by_id: dict[str, KeyRecord] = {}
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.every_s:
            return
        self._checked = now
        stamp = self.path.stat().st_mtime if self.path.is_file() else None
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        records = load(self.path.parent).keys if stamp is not None else []
        self._by_id = {k.id: k for k in records}

    def any_active(self) -> bool:
        self.refresh()
        return any(k.active for k in self._by_id.values())

    def check(self, key: str) -> tuple[KeyRecord | None, str]:
        """(the key's record, "") if ``key`` is valid, else (None, the reason)."""
        self.refresh()
        key_id = key_id_of(key)
        record = self._by_id.get(key_id or "")
        if record is None or not hmac.compare_digest(record.sha256, digest(key)):
            return None, "API key: not a key this service issued"
        if not record.active:
            return None, f"API key {record.id}: revoked"
        return record, ""


def listing(state_dir: Path) -> str:
    """The keys as JSON lines for ``distillery keys list`` (never the hash)."""
    rows = [k.model_dump(exclude={"sha256"}) for k in load(state_dir).keys]
    return "\n".join(json.dumps(r) for r in rows)
