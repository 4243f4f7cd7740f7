"""The on-disk registry: numbering, copies, the promoted pointer, history, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from training import registry as registry_module
from training.registry import Lineage, Registry, VersionMeta, write_atomic


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"hidden": 16}')
    (src / "sub" / "weights.bin").write_bytes(b"\x00\x01\x02")
    return src


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def _meta(parent: int | None = None) -> VersionMeta:
    return VersionMeta(version=0, lineage=Lineage(parent=parent, rows=10), metrics={"loss": 0.5})


def test_register_numbers_versions_and_copies_files(registry: Registry, model_dir: Path) -> None:
    metas = [registry.register(model_dir, _meta()) for _ in range(3)]
    assert [m.version for m in metas] == [1, 2, 3]
    assert registry.versions() == [1, 2, 3]
    for version in (1, 2, 3):
        folder = registry.path(version)
        assert folder.name == f"{version:06d}"
        assert (folder / "config.json").read_text() == '{"hidden": 16}'
        assert (folder / "sub" / "weights.bin").read_bytes() == b"\x00\x01\x02"
        stored = registry.get(version)
        assert stored.version == version
        assert stored.status == "candidate"
        assert stored.lineage.rows == 10
        assert stored.metrics == {"loss": 0.5}
    assert (model_dir / "config.json").exists()  # copied, not moved
    assert not (model_dir / "meta.json").exists()
    leftovers = [p.name for p in registry.versions_dir.iterdir() if not p.name.isdigit()]
    assert leftovers == []


def test_register_writes_meta_json(registry: Registry, model_dir: Path) -> None:
    meta = registry.register(model_dir, _meta(parent=None))
    raw = (registry.path(meta.version) / "meta.json").read_bytes()
    assert VersionMeta.model_validate_json(raw) == meta


def test_register_logs_history(registry: Registry, model_dir: Path) -> None:
    registry.register(model_dir, _meta())
    registry.register(model_dir, _meta(parent=1))
    history = registry.history()
    assert [(h["event"], h["version"], h["reason"]) for h in history] == [
        ("registered", 1, "parent=None"),
        ("registered", 2, "parent=1"),
    ]


def test_current_is_none_until_promote(registry: Registry, model_dir: Path) -> None:
    assert registry.current() is None
    registry.register(model_dir, _meta())
    assert registry.current() is None
    registry.promote(1, "first")
    assert registry.current() == 1


def test_promote_moves_pointer_and_records_history(registry: Registry, model_dir: Path) -> None:
    registry.register(model_dir, _meta())
    registry.register(model_dir, _meta(parent=1))
    registry.promote(1, "first version")
    registry.promote(2, "better")
    assert registry.current() == 2
    assert registry.get(2).status == "promoted"
    promoted = [(h["version"], h["reason"]) for h in registry.history() if h["event"] == "promoted"]
    assert promoted == [(1, "first version"), (2, "better")]
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".")]


def test_promote_unknown_version_raises_and_keeps_pointer(
    registry: Registry, model_dir: Path
) -> None:
    registry.register(model_dir, _meta())
    registry.promote(1, "ok")
    with pytest.raises(KeyError, match="version 7"):
        registry.promote(7, "nope")
    assert registry.current() == 1


def test_reject_records_gate_and_status(registry: Registry, model_dir: Path) -> None:
    registry.register(model_dir, _meta())
    gate = {"passed": False, "reason": "agreement 0.500 < 0.590"}
    registry.reject(1, "gate: agreement", gate)
    meta = registry.get(1)
    assert meta.status == "rejected"
    assert meta.gate == gate
    assert registry.current() is None
    last = registry.history()[-1]
    assert (last["event"], last["version"], last["reason"]) == ("rejected", 1, "gate: agreement")


def test_get_unknown_version_raises_key_error_naming_it(registry: Registry) -> None:
    with pytest.raises(KeyError, match="version 42 is not in the registry"):
        registry.get(42)


def test_update_changes_only_given_fields(registry: Registry, model_dir: Path) -> None:
    registry.register(model_dir, _meta())
    registry.update(1, metrics={"loss": 0.1})
    meta = registry.get(1)
    assert meta.metrics == {"loss": 0.1}
    assert meta.lineage.rows == 10


def test_numbering_continues_after_reopen(tmp_path: Path, model_dir: Path) -> None:
    Registry(tmp_path / "r").register(model_dir, _meta())
    again = Registry(tmp_path / "r")
    assert again.register(model_dir, _meta()).version == 2


def test_write_atomic_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_write_atomic_failure_keeps_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "current.json"
    write_atomic(target, b'{"version": 1}')

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(target, b'{"version": 2}')
    assert target.read_bytes() == b'{"version": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current.json"]


def test_failed_promote_keeps_the_old_pointer(
    registry: Registry, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register(model_dir, _meta())
    registry.register(model_dir, _meta(parent=1))
    registry.promote(1, "first")
    real_replace = os.replace

    def replace(src: str, dst: str | Path) -> None:
        if str(dst).endswith("current.json"):
            raise OSError("crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="crash"):
        registry.promote(2, "second")
    assert registry.current() == 1


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The ``time`` module inside ``training.registry``, frozen at ``clock[0]``."""
    now = [1_000.0]
    fake = SimpleNamespace(time=lambda: now[0], time_ns=lambda: int(now[0] * 1e9))
    monkeypatch.setattr(registry_module, "time", fake)
    return now


def _rolling(registry: Registry, model_dir: Path) -> None:
    """v1 promoted, v2 in shadow."""
    for parent in (None, 1):
        registry.register(model_dir, _meta(parent))
    registry.promote(1, "first")
    registry.start_rollout(2, "gate passed")


def _last(registry: Registry) -> tuple[str, int, str]:
    event = registry.history()[-1]
    return event["event"], event["version"], event["reason"]


def test_start_rollout_needs_a_current_version_and_only_one_runs(
    registry: Registry, model_dir: Path, clock: list[float]
) -> None:
    registry.register(model_dir, _meta())
    with pytest.raises(ValueError, match="no promoted version"):
        registry.start_rollout(1, "gate passed")
    assert (registry.rollout(), registry.get(1).status) == (None, "candidate")
    registry.register(model_dir, _meta(parent=1))
    registry.promote(1, "first")
    rollout = registry.start_rollout(2, "gate passed")
    assert (rollout.candidate, rollout.stable, rollout.stage) == (2, 1, "shadow")
    assert rollout.started_at == rollout.stage_started_at == 1_000.0
    assert (registry.get(2).status, _last(registry)) == ("shadow", ("shadow", 2, "gate passed"))
    registry.register(model_dir, _meta(parent=1))
    with pytest.raises(ValueError, match="v2 is already rolling out"):
        registry.start_rollout(3, "also passed")
    assert (registry.rollout(), registry.get(3).status) == (rollout, "candidate")


def test_advance_enters_canary_and_keeps_the_shadow_verdict(
    registry: Registry, model_dir: Path, clock: list[float]
) -> None:
    _rolling(registry, model_dir)
    clock[0] = 1_030.0
    verdict = {"action": "advance", "reason": "shadow: every check passed", "checks": []}
    rollout = registry.advance("canary", "shadow passed", verdict)
    assert (rollout.stage, rollout.started_at, rollout.stage_started_at) == (
        "canary",
        1_000.0,
        1_030.0,
    )
    assert registry.rollout() == rollout
    assert (registry.get(2).status, registry.get(2).online) == ("canary", {"shadow": verdict})
    assert (_last(registry), registry.current()) == (("canary", 2, "shadow passed"), 1)


def test_finish_promotes_the_candidate(registry: Registry, model_dir: Path) -> None:
    _rolling(registry, model_dir)
    registry.advance("canary", "shadow passed", {"action": "advance"})
    assert registry.finish("canary passed", {"action": "advance"}) == 2
    assert registry.current() == 2
    assert (registry.get(2).status, registry.get(1).status) == ("promoted", "retired")
    assert set(registry.get(2).online) == {"shadow", "canary"}
    assert registry.rollout() is None and not (registry.root / "rollout.json").exists()
    assert _last(registry) == ("promoted", 2, "canary passed")


def test_roll_back_keeps_the_stable_version(registry: Registry, model_dir: Path) -> None:
    _rolling(registry, model_dir)
    verdict = {"action": "rollback", "reason": "shadow: error_rate 0.1 > 0.01"}
    assert registry.roll_back("errors", verdict) == 2
    assert registry.current() == 1
    assert (registry.get(2).status, registry.get(1).status) == ("rolled_back", "promoted")
    assert registry.get(2).online == {"shadow": verdict}
    assert registry.rollout() is None and not (registry.root / "rollout.json").exists()
    assert _last(registry) == ("rolled_back", 2, "errors")
    with pytest.raises(ValueError, match="no rollout in progress"):
        registry.finish("again")


def test_set_paused_logs_paused_and_resumed(registry: Registry, model_dir: Path) -> None:
    _rolling(registry, model_dir)
    assert registry.set_paused(True, "operator").paused
    assert (registry.rollout() or pytest.fail()).paused
    assert _last(registry) == ("paused", 2, "operator")
    assert not registry.set_paused(False, "go on").paused
    assert _last(registry) == ("resumed", 2, "go on")


def test_demote_goes_back_to_the_previous_version(registry: Registry, model_dir: Path) -> None:
    with pytest.raises(ValueError, match="no earlier promoted version"):
        registry.demote("nothing promoted")
    for _ in range(2):
        registry.register(model_dir, _meta())
    registry.promote(1, "first")
    with pytest.raises(ValueError, match="no earlier promoted version"):
        registry.demote("only one")
    registry.promote(2, "second")
    assert registry.demote("users complain") == 1
    assert registry.current() == 1
    assert (registry.get(1).status, registry.get(2).status) == ("promoted", "rolled_back")
    assert [(e["event"], e["version"]) for e in registry.history()[-2:]] == [
        ("promoted", 1),
        ("rolled_back", 2),
    ]
    assert _last(registry) == ("rolled_back", 2, "users complain")


def test_second_demote_does_not_bring_back_the_rolled_back_version(
    registry: Registry, model_dir: Path
) -> None:
    for version in (1, 2, 3):
        registry.register(model_dir, _meta())
        registry.promote(version, f"v{version}")
    assert registry.demote("v3 is bad") == 2
    assert registry.demote("v2 is bad too") == 1


def test_demote_is_refused_while_a_rollout_runs(registry: Registry, model_dir: Path) -> None:
    for _ in range(3):
        registry.register(model_dir, _meta())
    registry.promote(1, "v1")
    registry.promote(2, "v2")
    registry.start_rollout(3, "gate passed")
    with pytest.raises(ValueError, match="v3 is rolling out"):
        registry.demote("no")
    assert registry.current() == 2
