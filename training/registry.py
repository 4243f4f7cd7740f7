"""The model registry on local disk: numbered versions, their lineage, and the promoted pointer.

Layout under ``root``::

    versions/000001/   model + tokenizer files, meta.json (lineage, config, metrics, gate)
    current.json       {"version": N}: the version users get
    rollout.json       the rollout in progress, if any (``training.rollout.Rollout``)
    history.jsonl      every transition (registered, rejected, shadow, canary, promoted,
                       rolled_back, paused, resumed) with its reason

Every write is atomic (temporary file or folder, fsync, ``os.replace``/``rename``): a crash leaves
the old state or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from training.rollout import Rollout, Stage

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
    window_end_ts: float = 0.0


class VersionMeta(BaseModel):
    version: int
    created: float = Field(default_factory=time.time)
    status: Status = "candidate"
    lineage: Lineage = Field(default_factory=Lineage)
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    gate: dict[str, Any] | None = None
    online: dict[str, Any] = Field(
        default_factory=dict, description="rollout stage → the verdict that ended it, with checks"
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions_dir = root / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    def path(self, version: int) -> Path:
        return self.versions_dir / f"{version:06d}"

    def versions(self) -> list[int]:
        return sorted(int(p.name) for p in self.versions_dir.iterdir() if p.name.isdigit())

    def get(self, version: int) -> VersionMeta:
        meta = self.path(version) / "meta.json"
        if not meta.is_file():
            raise KeyError(f"version {version} is not in the registry at {self.root}")
        return VersionMeta.model_validate_json(meta.read_bytes())

    def register(self, model_dir: Path, meta: VersionMeta) -> VersionMeta:
        """Copy ``model_dir`` in as the next version number; returns the meta with that number."""
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
        try:
            shutil.copytree(model_dir, staging, dirs_exist_ok=True)
            while True:
                version = (self.versions() or [0])[-1] + 1
                meta = meta.model_copy(update={"version": version})
                write_atomic(staging / "meta.json", meta.model_dump_json(indent=2).encode())
                try:
                    staging.rename(self.path(version))
                    break
                except OSError:  # another writer took the number: take the next
                    continue
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._log("registered", version, f"parent={meta.lineage.parent}")
        return meta

    def update(self, version: int, **changes: Any) -> VersionMeta:
        meta = self.get(version).model_copy(update=changes)
        write_atomic(self.path(version) / "meta.json", meta.model_dump_json(indent=2).encode())
        return meta

    def current(self) -> int | None:
        pointer = self.root / "current.json"
        if not pointer.is_file():
            return None
        version: int = json.loads(pointer.read_bytes())["version"]
        return version

    def promote(self, version: int, reason: str) -> None:
        self.get(version)  # raises if unknown
        previous = self.current()
        write_atomic(self.root / "current.json", json.dumps({"version": version}).encode())
        self._log("promoted", version, reason)
        self.update(version, status="promoted")
        if previous is not None and previous != version:
            self.update(previous, status="retired")

    def reject(self, version: int, reason: str, gate: dict[str, Any]) -> None:
        self.update(version, status="rejected", gate=gate)
        self._log("rejected", version, reason)

    @property
    def _rollout_file(self) -> Path:
        return self.root / "rollout.json"

    def rollout(self) -> Rollout | None:
        path = self._rollout_file
        return Rollout.model_validate_json(path.read_bytes()) if path.is_file() else None

    def _save_rollout(self, rollout: Rollout) -> Rollout:
        write_atomic(self._rollout_file, rollout.model_dump_json(indent=2).encode())
        return rollout

    def start_rollout(self, candidate: int, reason: str) -> Rollout:
        """Put a gate-passing ``candidate`` in shadow beside the current version."""
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
            stage_started_at=now,
            reason=reason,
        )
        self.update(candidate, status="shadow")
        self._log("shadow", candidate, reason)
        return self._save_rollout(rollout)

    def advance(self, stage: Stage, reason: str, verdict: dict[str, Any]) -> Rollout:
        """The rollout enters ``stage`` (canary); ``verdict`` ended the stage before it."""
        rollout = self._running()
        self._keep_verdict(rollout, verdict)
        self.update(rollout.candidate, status=stage)
        self._log(stage, rollout.candidate, reason)
        update = {"stage": stage, "stage_started_at": time.time()}
        return self._save_rollout(rollout.model_copy(update=update))

    def finish(self, reason: str, verdict: dict[str, Any] | None = None) -> int:
        """Promote the rollout's candidate to every user; returns its version."""
        rollout = self._ending(verdict)
        self.promote(rollout.candidate, reason)
        self._rollout_file.unlink(missing_ok=True)
        return rollout.candidate

    def roll_back(self, reason: str, verdict: dict[str, Any] | None = None) -> int:
        """End the rollout: its candidate never reaches users again; returns its version."""
        rollout = self._ending(verdict)
        self.update(rollout.candidate, status="rolled_back")
        self._log("rolled_back", rollout.candidate, reason)
        self._rollout_file.unlink(missing_ok=True)
        return rollout.candidate

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
        promoted = [e["version"] for e in self.history() if e["event"] == "promoted"]
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

    def _ending(self, verdict: dict[str, Any] | None) -> Rollout:
        """The rollout about to end, with the verdict that ends it (if any) kept."""
        rollout = self._running()
        if verdict is not None:
            self._keep_verdict(rollout, verdict)
        return rollout

    def _keep_verdict(self, rollout: Rollout, verdict: dict[str, Any]) -> None:
        online = {**self.get(rollout.candidate).online, rollout.stage: verdict}
        self.update(rollout.candidate, online=online)

    def history(self) -> list[dict[str, Any]]:
        log = self.root / "history.jsonl"
        if not log.is_file():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def _log(self, event: str, version: int, reason: str) -> None:
        line = json.dumps({"ts": time.time(), "event": event, "version": version, "reason": reason})
        with open(self.root / "history.jsonl", "a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
