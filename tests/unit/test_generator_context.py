"""A chat that cannot fit the student's context is refused whole, with the counts named
(``models.generator.Generator.over_context``), before any token is decoded."""

from __future__ import annotations

from typing import Any

import pytest

from distillery.events import ChatTurn
from models.generator import Generator, Sampling, Tokens


class _WordTokenizer:
    """One token per whitespace-separated word of every turn, as a chat template would count."""

    def apply_chat_template(self, turns: list[dict[str, str]], **_: Any) -> list[int]:
        return [1 for t in turns for _ in t["content"].split()]


class _Decoder:
    concurrent = False

    def __init__(self, context: int) -> None:
        self._context = context
        self.decoded = False

    @property
    def context(self) -> int:
        return self._context

    def tokens(self, prompt: list[int], sampling: Sampling, ends: set[int], most: int) -> Tokens:
        self.decoded = True
        yield from ()


def _generator(context: int) -> tuple[Generator, _Decoder]:
    decoder = _Decoder(context)
    return Generator(None, _WordTokenizer(), decoder), decoder


def _chat(words: int) -> list[ChatTurn]:
    return [ChatTurn(role="user", content="word " * words)]


@pytest.mark.parametrize(("words", "max_new"), [(90, 10), (0, 100), (99, 1)])
def test_a_chat_that_fits_with_its_reply_is_accepted(words: int, max_new: int) -> None:
    generator, decoder = _generator(context=100)
    assert generator.over_context(_chat(words), max_new) is None
    assert not decoder.decoded


def test_a_chat_over_the_context_names_the_context_and_both_counts() -> None:
    generator, decoder = _generator(context=100)
    reason = generator.over_context(_chat(95), 48)
    assert reason is not None
    assert "context is 100 tokens" in reason and "143 were asked for" in reason, reason
    assert "95 in the messages" in reason and "max_tokens 48" in reason, reason
    assert not decoder.decoded


def test_the_reply_bound_alone_can_overflow_a_short_chat() -> None:
    generator, _ = _generator(context=100)
    reason = generator.over_context(_chat(2), 99)
    assert reason is not None and "101 were asked for" in reason, reason


def test_a_copied_generator_has_a_lock_of_its_own() -> None:
    """Rounds and benchmarks deep-copy a student; its tokenizer lock cannot be copied."""
    import copy

    generator, _ = _generator(context=100)
    copied = copy.deepcopy(generator)
    assert copied._encoding is not generator._encoding
    assert copied.over_context(_chat(95), 10) is not None  # it still works, with its lock
