"""A student reference that a new version replaces without stalling a request.

The new weights load on a thread beside the old ones, then one reference switches; an answer
always names the version that made it. A replica keeps two: the stable student and a rollout
candidate. Promoting the candidate hands its loaded weights to the stable slot (``put``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ray import serve

from distillery.actors import find_scheduler
from training.rollout import takes_candidate

M = TypeVar("M")  # models.student.Student (classify) or models.generator.Generator (generate)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded(Generic[M]):
    student: M
    version: int


class Slot(Generic[M]):
    def __init__(
        self,
        name: str,
        load: Callable[[int, Path], M],
        on_switch: Callable[[int], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.loaded: Loaded[M] | None = None
        self._load = load
        self._on_switch = on_switch
        self._on_failure = on_failure
        self._wanted: int | None = None
        self._lock = threading.Lock()

    def want(self, version: int, path: Path, wait: bool = False) -> None:
        """Load ``version`` unless it is loaded or loading; ``wait``: here, else on a thread."""
        with self._lock:
            if version in (self._wanted, getattr(self.loaded, "version", None)):
                return
            self._wanted = version
        if wait:
            self._switch(version, self._load(version, path))
            return
        threading.Thread(
            target=self._load_and_switch,
            args=(version, path),
            name=f"load-{self.name}-v{version}",
            daemon=True,
        ).start()

    def put(self, version: int, student: M) -> None:
        """Switch to weights already loaded elsewhere."""
        with self._lock:
            if getattr(self.loaded, "version", None) == version:
                return
            self._wanted = version
        self._switch(version, student)

    def clear(self) -> None:
        with self._lock:
            self._wanted, self.loaded = None, None

    def _load_and_switch(self, version: int, path: Path) -> None:
        try:
            student = self._load(version, path)
        except Exception:
            log.exception("%s: could not load v%d; keeping %s", self.name, version, self.loaded)
            if self._on_failure is not None:
                self._on_failure()
            with self._lock:
                if self._wanted == version:  # let a later deploy of this version try again
                    self._wanted = getattr(self.loaded, "version", None)
            return
        self._switch(version, student)

    def _switch(self, version: int, student: M) -> None:
        with self._lock:
            if self._wanted != version:
                return  # another version was asked for (or the slot cleared) while it loaded
            self.loaded = Loaded(student, version)
        if self._on_switch is not None:
            self._on_switch(version)


@dataclass(frozen=True)
class Variant(Generic[M]):
    """The rollout candidate as routing sees it: ``shadow`` answers a ``share`` of texts
    unseen; ``canary`` answers a ``share`` of texts (or chats) for real."""

    student: M
    version: int
    stage: str
    share: float
    rollout_id: str

    def answers(self, client_key: str | None) -> bool:
        """A canary's share of requests (sticky by ``client_key``: ``takes_candidate``) goes
        to the candidate."""
        return self.stage == "canary" and takes_candidate(self.share, self.rollout_id, client_key)


def report_serving(version: int) -> None:
    """Tell the scheduler which version this replica now answers with (fire and forget)."""
    replica = serve.get_replica_context().replica_id.unique_id
    scheduler = find_scheduler()
    if scheduler is None:
        log.info("no scheduler to tell that replica %s serves v%d", replica, version)
    else:
        scheduler.report_serving.remote(replica, version)
