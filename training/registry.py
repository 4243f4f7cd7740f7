"""The model registry: numbered versions, their lineage, and the promoted pointer.

Layout under the model store's root (a local folder, a shared mount or an object store:
``training.model_store``, which also says what each filesystem guarantees)::

    versions/000001/   model + tokenizer files, meta.json (lineage, config, metrics, gate)
    current.json       {"version": N}: the version users get
    rollout.json       the rollout in progress, if any (``distillery.contracts.Rollout``)
    history.jsonl      every transition (registered, rejected, shadow, canary, promoted,
                       rolled_back, paused, resumed, widened) with its reason

On local disk every write is atomic (temporary file or folder, fsync, ``os.replace``/``rename``):
a crash leaves the old state or the new one, never half of either. On an object store each file
is one atomic put and a version's ``meta.json`` is written after its model files. Loaders ask
``local_dir`` for a folder to ``from_pretrained``: on another node that is a downloaded copy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery.contracts import (
    GateReport,
    Rollout,
    RolloutVerdict,
    Selection,
    Stage,
    TriggerRecord,
)
from distillery.files import write_atomic
from training.model_store import (
    CLAIM,
    MARKER,
    ModelStore,
    local_copy,
    version_folder,
)

CURRENT, ROLLOUT, HISTORY = "current.json", "rollout.json", "history.jsonl"
Status = Literal["candidate", "shadow", "canary", "promoted", "retired", "rejected", "rolled_back"]


class Lineage(BaseModel):
    """What a version was made from."""

    parent: int | None = None
    offsets: dict[str, dict[str, list[int]]] = Field(
        default_factory=dict, description="topic → partition → [first, last] offset used"
    )
    rows: int = 0
    recent_rows: int = 0
    replay_rows: int = 0
    correction_rows: int = 0
    distrusted_rows: int = Field(
        default=0, description="teacher labels down-weighted: they agreed with a bad-rated answer"
    )
    teachers: dict[str, int] = Field(
        default_factory=dict, description="training rows per teacher_id the labels came from"
    )
    current_teacher: str | None = Field(
        default=None, description="the teacher configured when the round ran"
    )
    old_labels: str = Field(
        default="keep", description="what the round did with other teachers' labels"
    )
    old_teacher_rows: int = 0
    window_end_ts: float = 0.0
    golden_rows: int = Field(default=0, description="held-out rows with a trusted human label")
    preference_pairs: int = Field(
        default=0, description="generate: rated-bad replies against a better one (DPO's pairs)"
    )
    teacher_weight: float | None = Field(
        default=None, description="mean KD weight the teacher's measured reliability gave"
    )
    trust: str = Field(default="off", description="measured: keys and teacher weighed by trust")
    ensemble_shares: dict[str, float] = Field(
        default_factory=dict,
        description="an ensemble teacher: each member's share of the mix the round trained on, "
        "measured against human labels; empty: the task file's weights",
    )


class VersionMeta(BaseModel):
    version: int
    created: float = Field(default_factory=time.time)
    status: Status = "candidate"
    lineage: Lineage = Field(default_factory=Lineage)
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    gate: GateReport | None = None
    online: dict[Stage, RolloutVerdict] = Field(
        default_factory=dict, description="rollout stage → the verdict that ended it, with checks"
    )
    trigger: TriggerRecord | None = Field(default=None, description="what started the round")
    cascade: Selection | None = Field(
        default=None, description="the cascade threshold offered for it at its gate"
    )


__all__ = ["Lineage", "Registry", "VersionMeta"]


Event = Literal[
    "registered", "rejected", "shadow", "canary", "widened", "promoted", "rolled_back",
    "paused", "resumed",
]  # fmt: skip


class HistoryEvent(BaseModel):
    """One line of the registry's history (``history.jsonl``, oldest first)."""

    model_config = ConfigDict(frozen=True)

    ts: float  # Unix s
    event: Event
    version: int
    reason: str = ""


class Registry:
    def __init__(self, root: Path | str, filesystem: Any = None) -> None:
        """``root``: a local folder, or an fsspec URL (``file://``, ``s3://``, ...); with
        ``filesystem`` (fsspec or pyarrow), a path on it."""
        self.store = ModelStore(root, filesystem)
        if self.store.local:
            self.versions_dir.mkdir(parents=True, exist_ok=True)

    @property
    def store_url(self) -> str:
        """The store as a replica on another node opens it: a local path or a URL."""
        return self.store.url

    @property
    def root(self) -> Path:
        """The registry's local folder (only a local store has one)."""
        if not self.store.local:
            raise ValueError(f"the registry at {self.store.url} is not a local folder")
        return self.store.root

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def path(self, version: int) -> Path:
        """The version's folder on a local store; load through ``local_dir`` instead."""
        return self.root / version_folder(version)

    def location(self, version: int) -> str:
        """Where the version's folder is: a local path, or a URL on a remote store."""
        return str(self.path(version)) if self.store.local else self._url(version_folder(version))

    def _url(self, rel: str) -> str:
        return f"{self.store.url.rstrip('/')}/{rel}"

    def local_dir(self, version: int, cache_dir: Path) -> Path:
        """A local folder with the version's files, for ``from_pretrained``: its own folder on a
        local store, else a complete copy in ``cache_dir`` (downloaded once). KeyError naming
        the version when it is not registered."""
        self.get(version)
        return local_copy(self.store, version, cache_dir)

    def versions(self) -> list[int]:
        """Registered versions, ascending (on a remote store: those whose upload finished)."""
        if self.store.local:
            return sorted(int(p.name) for p in self.versions_dir.iterdir() if p.name.isdigit())
        return sorted(int(n) for n in self.store.holding("versions", MARKER) if n.isdigit())

    def get(self, version: int) -> VersionMeta:
        raw = self.store.read(f"{version_folder(version)}/{MARKER}")
        if raw is None:
            raise KeyError(f"version {version} is not in the registry at {self.store.url}")
        return VersionMeta.model_validate_json(raw)

    def register(self, model_dir: Path, meta: VersionMeta) -> VersionMeta:
        """Copy ``model_dir`` in as the next version number; returns the meta with that number."""
        put = self._put_local if self.store.local else self._put_remote
        meta = put(model_dir, meta)
        self._log("registered", meta.version, f"parent={meta.lineage.parent}")
        return meta

    def _put_local(self, model_dir: Path, meta: VersionMeta) -> VersionMeta:
        """Stage a copy, then rename it to the next free number (the rename fails if taken)."""
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
        try:
            shutil.copytree(model_dir, staging, dirs_exist_ok=True)
            while True:
                version = (self.versions() or [0])[-1] + 1
                meta = meta.model_copy(update={"version": version})
                write_atomic(staging / MARKER, meta.model_dump_json(indent=2).encode())
                try:
                    staging.rename(self.path(version))
                    return meta
                except OSError:  # another writer took the number: take the next
                    continue
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _put_remote(self, model_dir: Path, meta: VersionMeta) -> VersionMeta:
        """Claim the next free number (exclusive create), upload the files, meta.json last."""
        taken = [int(n) for n in self.store.names("versions") if n.isdigit()]
        version = max(taken, default=0) + 1
        claim = f"pid {os.getpid()} at {time.time():.3f}".encode()
        while not self.store.create_exclusive(f"{version_folder(version)}/{CLAIM}", claim):
            version += 1  # another writer took the number: take the next
        folder = version_folder(version)
        try:
            self.store.upload(model_dir, folder, skip=frozenset({MARKER}))
            meta = meta.model_copy(update={"version": version})
            self.store.write(f"{folder}/{MARKER}", meta.model_dump_json(indent=2).encode())
        except BaseException:
            self.store.remove_tree(folder)  # nothing saw it: the number may be taken again
            raise
        return meta  # the claim stays: a writer with an older listing cannot take the number

    def update(self, version: int, **changes: Any) -> VersionMeta:
        meta = self.get(version).model_copy(update=changes)
        self.store.write(
            f"{version_folder(version)}/{MARKER}", meta.model_dump_json(indent=2).encode()
        )
        return meta

    def current(self) -> int | None:
        pointer = self.store.read(CURRENT)
        if pointer is None:
            return None
        version: int = json.loads(pointer)["version"]
        return version

    def promote(self, version: int, reason: str) -> None:
        self.get(version)  # raises if unknown
        previous = self.current()
        self.store.write(CURRENT, json.dumps({"version": version}).encode())
        self._log("promoted", version, reason)
        self.update(version, status="promoted")
        if previous is not None and previous != version:
            self.update(previous, status="retired")

    def reject(self, version: int, reason: str, gate: GateReport) -> None:
        self.update(version, status="rejected", gate=gate)
        self._log("rejected", version, reason)

    def rollout(self) -> Rollout | None:
        """The rollout in progress, or None. Ending one writes the outcome first and removes
        the rollout file last, so a crash in between leaves a file whose candidate is already
        promoted or rolled back: it is cleared here, not resumed."""
        raw = self.store.read(ROLLOUT)
        if raw is None:
            return None
        rollout = Rollout.model_validate_json(raw)
        ended = rollout.candidate == self.current()
        if ended or self.get(rollout.candidate).status == "rolled_back":
            self.store.remove(ROLLOUT)
            return None
        return rollout

    def _save_rollout(self, rollout: Rollout) -> Rollout:
        self.store.write(ROLLOUT, rollout.model_dump_json(indent=2).encode())
        return rollout

    def start_rollout(self, candidate: int, reason: str, stage: Stage = "shadow") -> Rollout:
        """Put a gate-passing ``candidate`` in ``stage`` beside the current version: shadow,
        or canary for a generate task (``training.generate_cycle``)."""
        stable = self.current()
        if stable is None:
            raise ValueError("no promoted version to roll out against: promote instead")
        if (running := self.rollout()) is not None:
            raise ValueError(f"v{running.candidate} is already rolling out ({running.stage})")
        now = time.time()
        rollout = Rollout(
            id=f"r{candidate}-{time.time_ns() % 10**9:09d}",
            candidate=candidate,
            stable=stable,
            started_at=now,
            stage=stage,
            stage_started_at=now,
            reason=reason,
        )
        self.update(candidate, status=stage)
        self._log(stage, candidate, reason)
        return self._save_rollout(rollout)

    def advance(self, stage: Stage, reason: str, verdict: RolloutVerdict) -> Rollout:
        """The rollout enters ``stage`` (canary); ``verdict`` ended the stage before it."""
        rollout = self._running()
        self._keep_verdict(rollout, verdict)
        self.update(rollout.candidate, status=stage)
        self._log(stage, rollout.candidate, reason)
        update = {"stage": stage, "stage_started_at": time.time()}
        return self._save_rollout(rollout.model_copy(update=update))

    def finish(self, reason: str, verdict: RolloutVerdict | None = None) -> int:
        """Promote the rollout's candidate to every user; returns its version."""
        rollout = self._ending(verdict)
        self.promote(rollout.candidate, reason)
        self.store.remove(ROLLOUT)
        return rollout.candidate

    def roll_back(self, reason: str, verdict: RolloutVerdict | None = None) -> int:
        """End the rollout: its candidate never reaches users again; returns its version."""
        rollout = self._ending(verdict)
        self.update(rollout.candidate, status="rolled_back")
        self._log("rolled_back", rollout.candidate, reason)
        self.store.remove(ROLLOUT)
        return rollout.candidate

    def widen(self, share: float, reason: str) -> Rollout:
        """A canary held for evidence: it answers ``share`` of the traffic from now on."""
        rollout = self._running()
        self._log("widened", rollout.candidate, reason)
        update = {"share": share, "widened_at": time.time()}
        return self._save_rollout(rollout.model_copy(update=update))

    def set_paused(self, paused: bool, reason: str) -> Rollout:
        rollout = self._running()
        self._log("paused" if paused else "resumed", rollout.candidate, reason)
        return self._save_rollout(rollout.model_copy(update={"paused": paused}))

    def demote(self, reason: str) -> int:
        """With no rollout running: serve the version promoted before the current one again;
        returns it. The current one is marked rolled back."""
        if (running := self.rollout()) is not None:
            raise ValueError(f"v{running.candidate} is rolling out: roll that back first")
        current = self.current()
        promoted = [e.version for e in self.history() if e.event == "promoted"]
        earlier = [
            v for v in promoted if v != current and self.get(v).status != "rolled_back"
        ]  # a version rolled back once is never the way back
        if current is None or not earlier:
            raise ValueError("no earlier promoted version to roll back to")
        previous = earlier[-1]
        self.promote(previous, reason)
        self.update(current, status="rolled_back")
        self._log("rolled_back", current, reason)
        return previous

    def _running(self) -> Rollout:
        rollout = self.rollout()
        if rollout is None:
            raise ValueError("no rollout in progress")
        return rollout

    def _ending(self, verdict: RolloutVerdict | None) -> Rollout:
        """The rollout about to end, with the verdict that ends it (if any) kept."""
        rollout = self._running()
        if verdict is not None:
            self._keep_verdict(rollout, verdict)
        return rollout

    def _keep_verdict(self, rollout: Rollout, verdict: RolloutVerdict) -> None:
        online = {**self.get(rollout.candidate).online, rollout.stage: verdict}
        self.update(rollout.candidate, online=online)

    def history(self) -> list[HistoryEvent]:
        raw = self.store.read(HISTORY)
        if raw is None:
            return []
        lines = raw.decode().splitlines()
        return [HistoryEvent.model_validate_json(line) for line in lines if line.strip()]

    def _log(self, event: Event, version: int, reason: str) -> None:
        line = HistoryEvent(ts=time.time(), event=event, version=version, reason=reason)
        self.store.append_line(HISTORY, line.model_dump_json())
