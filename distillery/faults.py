"""Failpoints: named places where a test can kill this process, to prove crash recovery.

``DISTILLERY_FAILPOINT=labeler.before_commit`` makes the labeler SIGKILL itself right there,
the same as ``kill -9`` landing at the worst moment. Unset (always, outside tests), a failpoint
is one environment lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("DISTILLERY_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
