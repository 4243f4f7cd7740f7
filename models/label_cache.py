"""A teacher's answers kept on disk, keyed by (teacher_id, SHA-256 of the text): a text the
same teacher has labelled never costs a second request, across restarts too. Another teacher or
prompt version has another id, so it never reads these answers. A generate task's replies are
kept the same way, keyed by the SHA-256 of the whole chat (``CachedResponder``).

SQLite in WAL mode (one file under the state folder; readers do not block the writer).
Unreadable answers are not kept: they are retried the next time the text comes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from distillery.events import ChatTurn
from models.responder import Responder, Response, ResponseBatch
from models.teacher import Teacher, TeacherBatch, TeacherHealth

_SCHEMA = """CREATE TABLE IF NOT EXISTS labels (
    teacher_id TEXT NOT NULL, text_sha TEXT NOT NULL, probs TEXT NOT NULL, logits TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (teacher_id, text_sha))"""
_REPLIES = """CREATE TABLE IF NOT EXISTS replies (
    teacher_id TEXT NOT NULL, chat_sha TEXT NOT NULL, response TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (teacher_id, chat_sha))"""


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def chat_sha(chat: list[ChatTurn]) -> str:
    return text_sha(json.dumps([turn.model_dump() for turn in chat]))


class LabelCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_REPLIES)
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

    def get_replies(self, teacher_id: str, chats: list[list[ChatTurn]]) -> dict[int, Response]:
        """Chat index → the reply already given to that very chat."""
        found: dict[int, Response] = {}
        with self._lock:
            for i, chat in enumerate(chats):
                row = self._db.execute(
                    "SELECT response FROM replies WHERE teacher_id=? AND chat_sha=?",
                    (teacher_id, chat_sha(chat)),
                ).fetchone()
                if row is not None:
                    found[i] = Response(**json.loads(row[0]))
        return found

    def put_replies(
        self, teacher_id: str, chats: list[list[ChatTurn]], replies: list[Response]
    ) -> None:
        now = time.time()
        rows = [(teacher_id, chat_sha(c), json.dumps(asdict(r)), now)
                for c, r in zip(chats, replies, strict=True)]  # fmt: skip
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", rows)

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


class CachedResponder:
    """A generate task's ``Responder`` with the same cache in front: a chat answered once is
    never asked again. Unreadable answers are not kept."""

    def __init__(self, inner: Responder, cache: LabelCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def teacher_id(self) -> str:
        return self.inner.teacher_id

    def health(self) -> TeacherHealth:
        return self.inner.health()

    def respond(self, chats: list[list[ChatTurn]]) -> ResponseBatch:
        hits = self.cache.get_replies(self.teacher_id, chats)
        misses = [i for i in range(len(chats)) if i not in hits]
        batch = ResponseBatch([hits.get(i) for i in range(len(chats))])
        batch.cost.cache_hits = len(hits)
        if not misses:
            return batch
        fresh = self.inner.respond([chats[i] for i in misses])
        batch.cost.add(fresh.cost)
        batch.unreadable = {misses[j]: raw for j, raw in fresh.unreadable.items()}
        got = [(j, r) for j, r in enumerate(fresh.responses) if r is not None]
        for j, response in got:
            batch.responses[misses[j]] = response
        self.cache.put_replies(self.teacher_id, [chats[misses[j]] for j, _ in got],
                               [r for _, r in got])  # fmt: skip
        return batch

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
