"""A teacher's answers kept on disk, keyed by (teacher_id, SHA-256 of the text): a text the
same teacher has labelled never costs a second request, across restarts too. Another teacher or
prompt version has another id, so it never reads these answers.

SQLite in WAL mode (one file under the state folder; readers do not block the writer).
Unreadable answers are not kept: they are retried the next time the text comes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from models.teacher import Teacher, TeacherBatch, TeacherHealth

_SCHEMA = """CREATE TABLE IF NOT EXISTS labels (
    teacher_id TEXT NOT NULL, text_sha TEXT NOT NULL, probs TEXT NOT NULL, logits TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (teacher_id, text_sha))"""


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class LabelCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def get(self, teacher_id: str, texts: list[str]) -> dict[int, tuple[list[float], list[float]]]:
        """Row index → (probs, logits) for the texts already answered."""
        found: dict[int, tuple[list[float], list[float]]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._db.execute(
                    "SELECT probs, logits FROM labels WHERE teacher_id=? AND text_sha=?",
                    (teacher_id, text_sha(text)),
                ).fetchone()
                if row is not None:
                    found[i] = (json.loads(row[0]), json.loads(row[1]))
        return found

    def put(self, teacher_id: str, texts: list[str], probs: np.ndarray, logits: np.ndarray) -> None:
        now = time.time()
        rows = [
            (teacher_id, text_sha(t), json.dumps(p.tolist()), json.dumps(q.tolist()), now)
            for t, p, q in zip(texts, probs, logits, strict=True)
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedTeacher:
    """Any ``Teacher`` with a ``LabelCache`` in front. A call that asks for sentence states goes
    to the teacher whole (states are not cached; only the cheap embedding teacher has them)."""

    def __init__(self, inner: Teacher, cache: LabelCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def teacher_id(self) -> str:
        return self.inner.teacher_id

    @property
    def has_states(self) -> bool:
        return self.inner.has_states

    def health(self) -> TeacherHealth:
        return self.inner.health()

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        if not texts or (with_states and self.inner.has_states):
            return self.inner.label(texts, with_states)
        hits = self.cache.get(self.teacher_id, texts)
        misses = [i for i in range(len(texts)) if i not in hits]
        fresh = self.inner.label([texts[i] for i in misses]) if misses else None
        width = len(next(iter(hits.values()))[0]) if fresh is None else fresh.probs.shape[1]
        probs = np.zeros((len(texts), width), dtype=np.float32)
        logits = np.zeros((len(texts), width), dtype=np.float32)
        for i, (p, q) in hits.items():
            probs[i], logits[i] = p, q
        batch = TeacherBatch(probs, logits)
        batch.cost.cache_hits = len(hits)
        if fresh is not None:
            probs[misses], logits[misses] = fresh.probs, fresh.logits
            batch.cost.add(fresh.cost)
            batch.unreadable = {misses[j]: raw for j, raw in fresh.unreadable.items()}
            good = [j for j in range(len(misses)) if j not in fresh.unreadable]
            self.cache.put(
                self.teacher_id,
                [texts[misses[j]] for j in good],
                fresh.probs[good],
                fresh.logits[good],
            )
        return batch
