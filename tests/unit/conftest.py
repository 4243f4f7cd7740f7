"""Shared tiny fixtures: a tokenizer with a hand-written vocabulary and a tiny student shape."""

from __future__ import annotations

import pytest
from transformers import BertTokenizer

from distillery.settings import StudentSettings

WORDS = [
    "[PAD]",  # id 0: Student pads with 0
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "good",
    "bad",
    "great",
    "terrible",
    "not",
    "very",
    "i",
    "love",
    "hate",
    "it",
    ".",
    "!",
]


@pytest.fixture(scope="session")
def tiny_tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})


@pytest.fixture(scope="session")
def tiny_shape() -> StudentSettings:
    return StudentSettings(layers=1, hidden=16, heads=2, intermediate=32, max_positions=64)
