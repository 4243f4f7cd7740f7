"""Feedback tokens: HMAC round trip, every way a token can be wrong, and the secret on disk."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from feedback.tokens import Served, load_secret, sign, verify

SECRET = b"s" * 32


def test_sign_verify_round_trip() -> None:
    token = sign(SECRET, "req-1", 7, "positive", "ab12cd34", issued=1_700_000_000.7)
    assert token.startswith("7.ab12cd34.1700000000.positive.")
    assert verify(SECRET, "req-1", token) == Served(7, "positive", "ab12cd34", 1_700_000_000)


def test_label_with_dots_round_trips() -> None:
    token = sign(SECRET, "req-1", 12, "very.good", issued=5)
    assert verify(SECRET, "req-1", token) == Served(12, "very.good", "open", 5)


def test_default_issue_time_is_now() -> None:
    before = int(time.time())
    served = verify(SECRET, "r", sign(SECRET, "r", 1, "x"))
    assert served is not None and before <= served.issued <= time.time()


def test_tampered_key_or_issue_time_is_rejected() -> None:
    token = sign(SECRET, "req-1", 7, "positive", "ab12cd34", issued=100)
    assert verify(SECRET, "req-1", token.replace("ab12cd34", "ffffffff")) is None
    assert verify(SECRET, "req-1", token.replace(".100.", ".999.")) is None


def test_different_request_id_is_rejected() -> None:
    token = sign(SECRET, "req-1", 7, "positive")
    assert verify(SECRET, "req-2", token) is None


def test_tampered_label_is_rejected() -> None:
    mac = sign(SECRET, "req-1", 7, "positive", issued=1).rsplit(".", 1)[1]
    assert verify(SECRET, "req-1", f"7.open.1.positive.{mac}") is not None
    assert verify(SECRET, "req-1", f"7.open.1.negative.{mac}") is None


def test_tampered_version_is_rejected() -> None:
    mac = sign(SECRET, "req-1", 7, "positive", issued=1).rsplit(".", 1)[1]
    assert verify(SECRET, "req-1", f"8.open.1.positive.{mac}") is None


def test_tampered_mac_is_rejected() -> None:
    token = sign(SECRET, "req-1", 7, "positive")
    flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert verify(SECRET, "req-1", flipped) is None


def test_different_secret_is_rejected() -> None:
    token = sign(SECRET, "req-1", 7, "positive")
    assert verify(b"t" * 32, "req-1", token) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "1..x",
        "1.positive",
        "1.positive.",
        "1.positive.abc",  # the old three-part form
        "1.open.x.positive.abc",
        "1..5.positive.abc",
        "1.open.5.positive",
        "1.open.5.positive.abcé",  # non-ASCII: refused, not a TypeError in compare_digest
        ".positive.abc",
        "-1.positive.abc",
        "x.positive.abc",
        "².positive.abc",  # str.isdigit() is True for '²' but int('²') fails
        "٣.positive.abc",
    ],
)
def test_malformed_tokens_are_none(token: str) -> None:
    assert verify(SECRET, "req-1", token) is None


def test_load_secret_prefers_configured_value(tmp_path: Path) -> None:
    assert load_secret("configured-secret-value", tmp_path / "state") == b"configured-secret-value"
    assert not (tmp_path / "state").exists()


def test_load_secret_creates_a_private_file_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_secret(None, state)
    path = state / "feedback_secret"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64
    assert bytes.fromhex(first.decode())  # hex, 32 random bytes
    assert load_secret(None, state) == first
    assert load_secret("", state) == first  # empty configured value means "not configured"
    assert sorted(p.name for p in state.iterdir()) == ["feedback_secret"]


def test_load_secret_reads_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "feedback_secret").write_text("kept-secret\n")
    assert load_secret(None, tmp_path) == b"kept-secret"


def test_tokens_signed_with_the_loaded_secret_verify(tmp_path: Path) -> None:
    secret = load_secret(None, tmp_path)
    token = sign(secret, "r", 1, "neutral")
    served = verify(load_secret(None, tmp_path), "r", token)
    assert served is not None and (served.model_version, served.label) == (1, "neutral")
