"""API keys (feedback.keys) and what the API does with them (services.access)."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from distillery.settings import PathSettings, ServeSettings, Settings, StoreSettings
from feedback import keys
from feedback.tokens import Served
from services.access import Access, Bucket


class FakeRequest:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = {k.lower(): v for k, v in headers.items()}


def test_a_key_is_kept_only_as_its_hash(tmp_path: Path) -> None:
    record, key = keys.create(tmp_path, "shop", predict_per_min=60)
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and record.sha256 in text and key.startswith(f"dk_{record.id}_")
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert keys.key_id_of(key) == record.id
    listed = [json.loads(line) for line in keys.listing(tmp_path).splitlines()]
    assert listed[0]["id"] == record.id and "sha256" not in listed[0]


def test_ring_accepts_the_key_and_refuses_others_and_revoked(tmp_path: Path) -> None:
    record, key = keys.create(tmp_path, "shop")
    ring = keys.KeyRing(tmp_path, every_s=0.0)
    assert ring.check(key)[0] == record
    assert ring.check(key[:-1] + ("0" if key[-1] != "0" else "1"))[0] is None
    assert ring.check("not-a-key")[1] == "API key: not a key this service issued"
    time.sleep(0.01)
    keys.update(tmp_path, record.id, revoked=time.time())
    found, reason = ring.check(key)  # picked up from the file, no restart
    assert found is None and reason == f"API key {record.id}: revoked"


def test_update_names_an_unknown_id(tmp_path: Path) -> None:
    keys.create(tmp_path, "shop")
    with pytest.raises(KeyError, match="no API key with id 'nope'"):
        keys.update(tmp_path, "nope", trusted=True)


def test_trusted_keys_come_from_the_file_and_the_settings(tmp_path: Path) -> None:
    trusted, _ = keys.create(tmp_path, "ops", trusted=True)
    revoked, _ = keys.create(tmp_path, "old", trusted=True)
    keys.update(tmp_path, revoked.id, revoked=1.0)
    keys.create(tmp_path, "app")
    settings = Settings(paths=PathSettings(state_dir=tmp_path))
    settings.trust.trusted_keys = "abcd1234, ffff0000"
    assert keys.trusted_keys(settings) == {trusted.id, "abcd1234", "ffff0000"}


def _access(tmp_path: Path, host: str = "127.0.0.1", auth: str = "auto") -> Access:
    return Access(
        Settings(
            paths=PathSettings(state_dir=tmp_path),
            serve=ServeSettings(host=host, auth=auth),  # type: ignore[arg-type]
            store=StoreSettings(join_window_s=60),
        )
    )


def test_open_only_on_loopback_until_a_key_exists(tmp_path: Path) -> None:
    assert _access(tmp_path).identify(FakeRequest({}), "predict") == "open"  # type: ignore[arg-type]
    assert _access(tmp_path, host="0.0.0.0").mode() == "keys"
    with pytest.raises(ValidationError, match=re.escape("auth='open' with host='0.0.0.0'")):
        ServeSettings(host="0.0.0.0", auth="open")
    record, key = keys.create(tmp_path, "shop")
    access = _access(tmp_path)
    assert access.mode() == "keys"
    with pytest.raises(HTTPException) as missing:
        access.identify(FakeRequest({}), "predict")  # type: ignore[arg-type]
    assert missing.value.status_code == 401 and "missing" in missing.value.detail
    bearer = FakeRequest({"Authorization": f"Bearer {key}"})
    assert access.identify(bearer, "predict") == record.id  # type: ignore[arg-type]
    header = FakeRequest({"X-API-Key": key})
    assert access.identify(header, "feedback") == record.id  # type: ignore[arg-type]


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    _, key = keys.create(tmp_path, "shop", feedback_per_min=6)
    access = _access(tmp_path)
    request = FakeRequest({"Authorization": f"Bearer {key}"})
    access.identify(request, "feedback")  # type: ignore[arg-type]  # the burst holds one
    with pytest.raises(HTTPException) as limited:
        access.identify(request, "feedback")  # type: ignore[arg-type]
    assert limited.value.status_code == 429 and "6/min" in limited.value.detail
    assert int(limited.value.headers["Retry-After"]) >= 1  # type: ignore[index]
    assert access.identify(request, "predict")  # type: ignore[arg-type]  # no predict limit


def test_bucket_refills_at_its_rate() -> None:
    bucket = Bucket(rate=1000.0, burst=2)
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() > 0
    time.sleep(0.01)
    assert bucket.take() == 0


def test_token_from_another_key_or_past_the_window_is_refused(tmp_path: Path) -> None:
    access = _access(tmp_path)
    now = int(time.time())
    assert access.token_problem(Served(1, "positive", "aaaa0000", now), "aaaa0000") is None
    other = access.token_problem(Served(1, "positive", "aaaa0000", now), "bbbb1111")
    assert other == "feedback_token: issued to API key aaaa0000, not to bbbb1111"
    late = access.token_problem(Served(1, "positive", "aaaa0000", now - 120), "aaaa0000")
    assert late is not None and "past the 60s join window" in late


def test_keys_command_creates_lists_by_reliability_trusts_and_revokes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from feedback import trust_report
    from feedback.trust_report import SourceTrust, TrustModel

    monkeypatch.setenv("DISTILLERY_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    made = [json.loads(runner.invoke(app, ["keys", "create", n]).stdout) for n in ("a", "b")]
    assert all(m["key"].startswith("dk_") for m in made)

    def source(key_id: str, reliability: float) -> SourceTrust:
        return SourceTrust(
            source=key_id, reliability=reliability, weight=reliability, agreements=0,
            comparisons=10, labels=5,
        )  # fmt: skip

    teacher = source("teacher", 0.8)
    estimate = [source(made[0]["id"], 0.2), source(made[1]["id"], 0.95)]
    trust_report.save(
        tmp_path, TrustModel(keys=estimate, teacher=teacher, teacher_cells=[], n_labels=2)
    )
    listed = [json.loads(line) for line in runner.invoke(app, ["keys", "list"]).stdout.splitlines()]
    assert [row["name"] for row in listed] == ["b", "a"]  # most reliable first
    assert listed[0]["reliability"] == 0.95 and "sha256" not in listed[0]
    trusted = json.loads(runner.invoke(app, ["keys", "trust", made[0]["id"]]).stdout)
    assert trusted["trusted"] is True
    revoked = json.loads(runner.invoke(app, ["keys", "revoke", made[1]["id"]]).stdout)
    assert revoked["revoked"] is not None
    unknown = runner.invoke(app, ["keys", "revoke", "zzzzzzzz"])
    assert unknown.exit_code == 2 and "no API key with id 'zzzzzzzz'" in unknown.output
