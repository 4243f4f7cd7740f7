"""Failpoints: named places where a test can kill this process, to prove crash recovery.

``DISTILLERY_FAILPOINT=labeler.before_commit`` makes the labeler SIGKILL itself right there,
the same as ``kill -9`` landing at the worst moment. Unset (always, outside tests), a failpoint
is one environment lookup.
"""

from __future__ import annotations

import os
import signal


def armed(name: str, setting: str | None = None) -> bool:
    """Whether failpoint ``name`` is set: in ``DISTILLERY_FAILPOINT``, or in ``setting`` where
    the environment does not reach (a Ray Train worker gets it through its loop config)."""
    return (setting if setting is not None else os.environ.get("DISTILLERY_FAILPOINT")) == name


def die() -> None:
    """SIGKILL this process, as ``kill -9`` would."""
    os.kill(os.getpid(), signal.SIGKILL)


def failpoint(name: str) -> None:
    if armed(name):
        die()
