"""The label cache: a repeated text never costs a second call, across restarts; another
teacher id never reads these answers; unreadable answers are not kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distillery.events import ChatTurn
from models.label_cache import CachedResponder, CachedTeacher, LabelCache
from models.responder import Responder, Response, ResponseBatch
from models.teacher import TeacherBatch, TeacherHealth, always_up


class Counting:
    """A teacher that counts the texts it is asked, and cannot read texts with "??"."""

    def __init__(self, teacher_id: str = "fake:1") -> None:
        self.asked: list[str] = []
        self._id = teacher_id

    @property
    def teacher_id(self) -> str:
        return self._id

    @property
    def has_states(self) -> bool:
        return False

    def health(self) -> TeacherHealth:
        return always_up(self._id)

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        self.asked += texts
        p = np.array([[len(t) % 2, 1 - len(t) % 2] for t in texts], dtype=np.float32)
        p = np.clip(p, 0.1, 0.9).reshape(len(texts), 2)
        return TeacherBatch(
            p, np.log(p), unreadable={i: "raw" for i, t in enumerate(texts) if "??" in t}
        )


def test_a_repeated_text_costs_once_even_after_a_restart(tmp_path: Path) -> None:
    inner = Counting()
    teacher = CachedTeacher(inner, LabelCache(tmp_path / "c.sqlite"))
    first = teacher.label(["a", "bb", "??"])
    assert inner.asked == ["a", "bb", "??"] and first.unreadable == {2: "raw"}
    second = teacher.label(["bb", "ccc", "a", "??"])
    assert inner.asked[3:] == ["ccc", "??"]  # only the new text and the unreadable one
    assert second.cost.cache_hits == 2
    np.testing.assert_allclose(second.probs[0], first.probs[1])
    np.testing.assert_allclose(second.probs[2], first.probs[0])
    assert second.unreadable == {3: "raw"}
    restarted = CachedTeacher(inner, LabelCache(tmp_path / "c.sqlite"))
    restarted.label(["a", "bb", "ccc"])
    assert len(inner.asked) == 5  # nothing asked again


def test_another_teacher_id_never_reads_the_cache(tmp_path: Path) -> None:
    cache = LabelCache(tmp_path / "c.sqlite")
    CachedTeacher(Counting("fake:1"), cache).label(["a"])
    other = Counting("fake:2")
    CachedTeacher(other, cache).label(["a"])
    assert other.asked == ["a"]


class Replying:
    """A responder that counts the chats it is asked; a chat mentioning 'unreadable' gets none."""

    teacher_id = "llm-gen:m:1"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def health(self) -> TeacherHealth:
        return always_up(self.teacher_id)

    def respond(self, chats: list[list[ChatTurn]]) -> ResponseBatch:
        self.asked += [c[-1].content for c in chats]
        batch = ResponseBatch([None] * len(chats))
        for i, chat in enumerate(chats):
            if "unreadable" in chat[-1].content:
                batch.unreadable[i] = "{}"
            else:
                batch.responses[i] = Response(f"re: {chat[-1].content}", "stop", 3)
        return batch


def _chat(text: str, system: str = "Be kind.") -> list[ChatTurn]:
    return [ChatTurn(role="system", content=system), ChatTurn(role="user", content=text)]


def test_a_repeated_chat_is_answered_once_and_an_unreadable_one_is_asked_again(
    tmp_path: Path,
) -> None:
    inner = Replying()
    cached = CachedResponder(inner, LabelCache(tmp_path / "c.sqlite"))
    first = cached.respond([_chat("a"), _chat("unreadable b")])
    assert first.responses[0] == Response("re: a", "stop", 3) and first.unreadable == {1: "{}"}
    again = CachedResponder(inner, LabelCache(tmp_path / "c.sqlite"))  # after a restart
    second = again.respond([_chat("a"), _chat("unreadable b"), _chat("a", "Be brief.")])
    assert second.responses[0] == Response("re: a", "stop", 3) and second.cost.cache_hits == 1
    assert inner.asked == ["a", "unreadable b", "unreadable b", "a"]  # another system prompt: asked
    assert isinstance(again, Responder)  # the labeler dispatches on the protocol
