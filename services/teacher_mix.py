"""The labeler's ensemble mix follows the shares the rounds measured against people (issue 14:
weigh an ensemble's members by their agreement with human labels).

Each round writes its trust estimate to ``state/trust.json`` (``feedback.trust_report``), with an
ensemble member's ``share`` once every member has enough human labels
(``feedback.ensemble_trust``). The labeler looks at the file's modification time before each
teacher call (a ``stat``, microseconds against a teacher call's milliseconds to seconds) and, when
it changed, re-mixes its teacher (``models.teacher.Remixable``); a teacher that is no ensemble is
left alone, so the labeler still knows no backend. Without shares, the task file's weights stand.

Why the labeler and not only the rounds: the labels' own mix is what the cascade answers users
with and what the disagreement metric compares the student against. On VADER's source task the
task file's half-and-half mix of the LLM (at chance) and MiniLM scored 0.480, the mix by shares
measured on 200 human labels 0.680 (``bench/results/ensemble.md``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from feedback import trust_report
from models.teacher import Remixable

log = logging.getLogger(__name__)


class MixFollower:
    """Re-mixes a teacher when ``state_dir``'s trust estimate changes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.weights: dict[str, float] = {}  # member teacher_id → weight in use, once known
        self._stamp: int | None = None
        self._lock = threading.Lock()  # the labeler's stream and its cascade calls both follow

    def follow(self, teacher: object) -> bool:
        """Re-mix ``teacher`` by the newest shares if the estimate changed since the last look;
        True when the weights in use changed (or became known: the first estimate read). A file
        that cannot be read is logged and skipped (the mix in use stands): the next round writes
        it again."""
        if not isinstance(teacher, Remixable):
            return False
        with self._lock:
            return self._follow(teacher)

    def _follow(self, teacher: Remixable) -> bool:
        try:
            stamp = (self.state_dir / trust_report.FILENAME).stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            model = trust_report.load(self.state_dir)
        except (OSError, ValueError) as exc:
            log.warning("labeler: cannot read the trust estimate (%s); the mix stands", exc)
            return False
        members = model.members if model is not None else []
        shares = {m.source: m.share for m in members if m.share is not None}
        weights = teacher.reweigh(shares)
        if weights == self.weights:
            return False
        by = "measured shares" if shares and sum(shares.values()) > 0 else "the task file"
        log.info("labeler: the ensemble now mixes by %s: %s", by, weights)
        self.weights = weights
        return True
