"""The registry: numbering, copies, the promoted pointer, history, atomic writes; on a local
folder, a shared path (file://), an object store (memory://) and a pyarrow filesystem."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
from pydantic import ValidationError
from transformers import BertTokenizer

from distillery.contracts import Evidence, GateCheck, GateReport, RolloutVerdict
from distillery.files import write_atomic
from distillery.settings import PathSettings, Settings, StudentSettings
from models.student import Student, new_student
from training import registry as registry_module
from training.model_store import ModelStore, local_copy
from training.registry import Lineage, Registry, VersionMeta


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
    assert [(h.event, h.version, h.reason) for h in history] == [
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
    promoted = [(h.version, h.reason) for h in registry.history() if h.event == "promoted"]
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
    check = GateCheck("agreement", 0.5, 0.6, 0.59, False)
    gate = GateReport(passed=False, checks=[check], reason="agreement 0.500 < 0.590")
    registry.reject(1, "gate: agreement", gate)
    meta = registry.get(1)
    assert meta.status == "rejected"
    assert meta.gate == gate  # read back from meta.json as the model it was
    assert registry.current() is None
    last = registry.history()[-1]
    assert (last.event, last.version, last.reason) == ("rejected", 1, "gate: agreement")


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
    return event.event, event.version, event.reason


def test_a_rollout_may_start_in_canary(registry: Registry, model_dir: Path) -> None:
    registry.register(model_dir, _meta())
    registry.promote(1, "first")
    registry.register(model_dir, _meta(parent=1))
    rollout = registry.start_rollout(2, "gate passed", stage="canary")
    assert (rollout.stage, registry.rollout(), registry.get(2).status) == (
        "canary",
        rollout,
        "canary",
    )
    assert _last(registry) == ("canary", 2, "gate passed")


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


def test_a_meta_json_written_by_an_older_release_still_loads(
    registry: Registry, model_dir: Path
) -> None:
    """Gate and verdict records were plain dicts before they were typed: one missing today's
    fields (referee, evidence) or carrying one since dropped is read, not refused."""
    registry.register(model_dir, _meta())
    marker = registry.root / "versions" / "000001" / "meta.json"
    raw = json.loads(marker.read_text())
    raw["gate"] = {"passed": True, "checks": [], "reason": "ok", "old_field": 1}
    raw["online"] = {"shadow": {"action": "advance", "reason": "passed", "checks": []}}
    marker.write_text(json.dumps(raw))
    meta = registry.get(1)
    assert meta.gate == GateReport(passed=True, reason="ok") and meta.gate.referee == "teacher"
    assert meta.online["shadow"].candidate == Evidence()


def test_advance_enters_canary_and_keeps_the_shadow_verdict(
    registry: Registry, model_dir: Path, clock: list[float]
) -> None:
    _rolling(registry, model_dir)
    clock[0] = 1_030.0
    verdict = RolloutVerdict(
        action="advance", reason="shadow: every check passed", candidate=Evidence(requests=40)
    )
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
    advance = RolloutVerdict(action="advance", reason="every check passed")
    registry.advance("canary", "shadow passed", advance)
    assert registry.finish("canary passed", advance) == 2
    assert registry.current() == 2
    assert (registry.get(2).status, registry.get(1).status) == ("promoted", "retired")
    assert set(registry.get(2).online) == {"shadow", "canary"}
    assert registry.rollout() is None and not (registry.root / "rollout.json").exists()
    assert _last(registry) == ("promoted", 2, "canary passed")


def test_roll_back_keeps_the_stable_version(registry: Registry, model_dir: Path) -> None:
    _rolling(registry, model_dir)
    verdict = RolloutVerdict(action="rollback", reason="shadow: error_rate 0.1 > 0.01")
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
    assert [(e.event, e.version) for e in registry.history()[-2:]] == [
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


# --- the model store on shared storage: file:// (a shared mount), memory:// (an object store),
# --- a pyarrow filesystem; local copies for loading; number allocation by two writers.


@pytest.fixture()
def memory_url(tmp_path: Path) -> Iterator[str]:
    """A fresh fsspec memory:// store (process-wide, so named per test and removed after)."""
    url = f"memory://registry-{tmp_path.name}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/registry-{tmp_path.name}"):
        fs.rm(f"/registry-{tmp_path.name}", recursive=True)


@pytest.fixture()
def tiny_student_dir(
    tmp_path: Path, tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings
) -> Path:
    """A tiny BertForSequenceClassification and its tokenizer, saved with save_pretrained."""
    folder = tmp_path / "student"
    new_student(["bad", "good"], tiny_shape, tiny_tokenizer.vocab_size).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_two_nodes_share_a_file_url_store(tmp_path: Path, model_dir: Path) -> None:
    shared = tmp_path / "shared"
    node_a, node_b = Registry(shared.as_uri()), Registry(shared.as_uri())
    assert node_a.store.local and node_a.store_url == shared.as_uri()
    node_a.register(model_dir, _meta())
    node_a.register(model_dir, _meta(parent=1))
    node_a.promote(1, "first")
    assert (node_b.versions(), node_b.current()) == ([1, 2], 1)
    here_a = node_a.local_dir(1, tmp_path / "cache-a")
    here_b = node_b.local_dir(1, tmp_path / "cache-b")
    assert here_a == here_b == shared / "versions" / "000001"  # loaded in place, not copied
    assert not (tmp_path / "cache-a").exists() and not (tmp_path / "cache-b").exists()
    assert _files(here_b)["sub/weights.bin"] == b"\x00\x01\x02"
    node_b.promote(2, "node b's promotion")
    assert node_a.current() == 2
    assert node_a.get(1).status == "retired"
    assert node_a.history()[-1].reason == "node b's promotion"


def test_a_memory_store_version_is_downloaded_complete_and_loads(
    tmp_path: Path, memory_url: str, tiny_student_dir: Path
) -> None:
    writer, reader = Registry(memory_url), Registry(memory_url)
    assert not writer.store.local
    meta = writer.register(tiny_student_dir, _meta())
    writer.promote(meta.version, "first")
    assert (reader.versions(), reader.current()) == ([1], 1)
    assert reader.location(1) == f"{memory_url}/versions/000001"
    cache = tmp_path / "cache"
    copy = reader.local_dir(1, cache)
    assert copy.is_relative_to(cache) and copy.name == "000001"
    copied = _files(copy)
    assert {k: v for k, v in copied.items() if k != "meta.json"} == _files(tiny_student_dir)
    assert VersionMeta.model_validate_json(copied["meta.json"]).version == 1
    assert [p.name for p in copy.parent.iterdir()] == ["000001"]  # no temporary folder left
    texts = ["the movie was good", "i hate it"]
    expected = Student.load(tiny_student_dir).predict_proba(texts)
    np.testing.assert_allclose(Student.load(copy).predict_proba(texts), expected, rtol=1e-6)


def test_a_cached_copy_is_not_downloaded_again(
    tmp_path: Path, memory_url: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(memory_url)
    registry.register(model_dir, _meta())
    first = registry.local_dir(1, tmp_path / "cache")

    def no_download(*args: object) -> None:
        raise AssertionError("downloaded a version that is already cached")

    monkeypatch.setattr(ModelStore, "download", no_download)
    assert registry.local_dir(1, tmp_path / "cache") == first
    with pytest.raises(AssertionError, match="already cached"):
        registry.local_dir(1, tmp_path / "other-cache")


def test_a_failed_download_leaves_no_copy(
    tmp_path: Path, memory_url: str, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(memory_url)
    registry.register(model_dir, _meta())
    real_get = registry.store.fs.get_file

    def get_file(rpath: str, lpath: str, **kwargs: object) -> None:
        if rpath.endswith("meta.json"):
            raise OSError("connection reset")
        real_get(rpath, lpath, **kwargs)

    monkeypatch.setattr(registry.store.fs, "get_file", get_file)
    with pytest.raises(OSError, match="connection reset"):
        registry.local_dir(1, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*/*")) == []  # the partial copy is gone
    monkeypatch.undo()
    assert _files(registry.local_dir(1, tmp_path / "cache"))["config.json"] == b'{"hidden": 16}'


def test_an_unfinished_upload_is_invisible_and_its_number_skipped(
    tmp_path: Path, memory_url: str, model_dir: Path
) -> None:
    registry = Registry(memory_url)
    registry.register(model_dir, _meta())
    registry.store.write("versions/000002/config.json", b"{}")  # a writer died mid-upload
    assert registry.versions() == [1]
    with pytest.raises(KeyError, match="version 2 is not in the registry at memory://"):
        registry.local_dir(2, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"versions/000002 has no meta\.json"):
        local_copy(registry.store, 2, tmp_path / "cache")
    assert registry.register(model_dir, _meta()).version == 3
    assert registry.versions() == [1, 3]
    assert ".claim" in registry.store.names("versions/000003")  # kept: the number stays taken
    assert ".claim" not in _files(registry.local_dir(3, tmp_path / "cache"))  # not copied


def test_memory_store_keeps_pointers_rollout_and_history(memory_url: str, model_dir: Path) -> None:
    registry = Registry(memory_url)
    _rolling(registry, model_dir)
    again = Registry(memory_url)
    running = again.rollout()
    assert running is not None and (running.candidate, running.stable) == (2, 1)
    assert again.finish("canary passed") == 2
    assert (registry.current(), registry.rollout()) == (2, None)
    assert [e.event for e in registry.history()] == [
        "registered", "registered", "promoted", "shadow", "promoted",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="is not a local folder"):
        registry.path(1)


def test_a_pyarrow_filesystem_works_as_a_store(tmp_path: Path, model_dir: Path) -> None:
    import pyarrow.fs

    root = str(tmp_path / "arrow")
    registry = Registry(root, filesystem=pyarrow.fs.LocalFileSystem())
    assert not registry.store.local  # wrapped for fsspec: the object-store path, "xb" unsupported
    assert [registry.register(model_dir, _meta()).version for _ in range(2)] == [1, 2]
    registry.promote(2, "ok")
    assert Registry(tmp_path / "arrow").current() == 2  # the same layout as a local registry
    copy = registry.local_dir(2, tmp_path / "cache")
    assert _files(copy)["sub/weights.bin"] == b"\x00\x01\x02"


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_two_writers_with_the_same_view_take_distinct_numbers(
    tmp_path: Path, memory_url: str, model_dir: Path, kind: str
) -> None:
    """Writer B lists the versions before writer A registers, then registers: it must not
    reuse A's number (a rename onto A's folder, or an exclusive create of A's claim, fails)."""
    url = (tmp_path / "shared").as_uri() if kind == "file" else memory_url
    a, b = Registry(url), Registry(url)
    stale_versions, stale_names = b.versions(), b.store.names("versions")
    assert a.register(model_dir, _meta()).version == 1
    real_versions, real_names = b.versions, b.store.names
    calls = [0]

    def versions() -> list[int]:
        calls[0] += 1
        return stale_versions if calls[0] == 1 else real_versions()

    def names(rel: str) -> list[str]:
        calls[0] += 1
        return stale_names if calls[0] == 1 else real_names(rel)

    b.versions, b.store.names = versions, names  # type: ignore[method-assign]
    assert b.register(model_dir, _meta()).version == 2
    assert calls[0] >= 1
    assert a.versions() == [1, 2]
    assert a.get(1).lineage.parent is None and _files(a.local_dir(2, tmp_path / "c"))


def test_concurrent_registers_on_a_shared_path_get_distinct_numbers(
    tmp_path: Path, model_dir: Path
) -> None:
    url = (tmp_path / "shared").as_uri()
    nodes = [Registry(url), Registry(url)]
    start = threading.Barrier(len(nodes))

    def register_many(node: Registry) -> list[int]:
        start.wait()
        return [node.register(model_dir, _meta()).version for _ in range(6)]

    with ThreadPoolExecutor(len(nodes)) as pool:
        taken = [v for got in pool.map(register_many, nodes) for v in got]
    assert sorted(taken) == list(range(1, 13))
    assert nodes[0].versions() == list(range(1, 13))
    registered = [e.version for e in nodes[1].history() if e.event == "registered"]
    assert sorted(registered) == list(range(1, 13))


def test_a_bad_store_url_names_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_MODEL_STORE", "nosuchfs://bucket/models")
    with pytest.raises(ValidationError, match=r"model_store='nosuchfs://bucket/models'"):
        PathSettings()


def test_the_store_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = PathSettings()
    assert paths.model_store is None
    assert paths.model_store_url() == str(paths.registry_dir)  # unset: the registry as before
    assert paths.model_cache_path() == paths.state_dir / "model-cache"
    monkeypatch.setenv("DISTILLERY_MODEL_STORE", "s3://bucket/models")
    monkeypatch.setenv("DISTILLERY_MODEL_CACHE_DIR", "cache")
    paths = PathSettings()
    assert paths.model_store_url() == "s3://bucket/models"
    assert paths.model_cache_path() == tmp_path.resolve() / "cache"
    monkeypatch.setenv("DISTILLERY_MODEL_STORE", "shared/models")  # a path is made absolute
    assert PathSettings().model_store_url() == str(tmp_path.resolve() / "shared" / "models")


def test_serve_specs_name_the_store_and_version(memory_url: str, model_dir: Path) -> None:
    from distillery.contracts import StudentConfig
    from monitoring import promotion
    from services import deploy

    settings = Settings(paths=PathSettings(model_store=memory_url))
    registry = Registry(settings.paths.model_store_url())
    _rolling(registry, model_dir)
    spec = promotion.candidate_spec(settings, registry)
    assert spec is not None
    assert (spec.version, spec.store, spec.stage) == (2, memory_url, "shadow")
    state = promotion.serve_state(settings, registry)
    assert state is not None and state.candidate == spec
    config = deploy.serve_config(settings, state)
    user_config = config["applications"][0]["deployments"][0]["user_config"]
    assert (user_config["version"], user_config["store"]) == (1, memory_url)
    assert user_config["candidate"] == spec.model_dump(mode="json")
    old_style = deploy.serve_config(settings, StudentConfig(version=1, path="/models/v1"))
    old_user_config = old_style["applications"][0]["deployments"][0]["user_config"]
    assert old_user_config == {"version": 1, "path": "/models/v1", "candidate": None}


@pytest.mark.parametrize("ending", ["promoted", "rolled_back"])
def test_a_rollout_left_behind_by_a_crash_while_ending_is_cleared(
    registry: Registry, model_dir: Path, clock: list[float], ending: str
) -> None:
    _rolling(registry, model_dir)
    # the outcome is written first, the rollout file removed last: crash in between
    if ending == "promoted":
        registry.promote(2, "finish: every check passed")
    else:
        registry.update(2, status="rolled_back")
    assert registry.store.read("rollout.json") is not None
    assert registry.rollout() is None
    assert registry.store.read("rollout.json") is None
    assert registry.current() == (2 if ending == "promoted" else 1)
