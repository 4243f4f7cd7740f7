"""What a drift check compares, per task kind: both windows as frames of columns
(``monitoring.features``), drawn from the serving version alone, so that a reference answered by
older versions compares like with like.

- A classifier (``StudentColumns``): text features (with the share of the student's unknown
  tokens), the principal components of the student's pooled embeddings, and its predictions.
- A generate task (``PromptColumns``): the prompts' text features and the principal components of
  the serving LM's input embeddings, mean-pooled per prompt (``models.prompt_embedding``). No
  prediction columns: a reply is no label, and its quality is measured apart (the served replies'
  chrF against the teacher's, ``monitoring.quality.reply_disagreement``).

The reference window only changes with a promotion, so its encoding is kept between checks.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd

from distillery.settings import Settings
from distillery.task import Task
from monitoring.features import embedding_components, prediction_features, text_features
from training.registry import Registry

Frames = tuple[pd.DataFrame, pd.DataFrame]  # (reference, current), the same columns


class Columns(Protocol):
    def frames(self, version: int, reference: pd.DataFrame, current: pd.DataFrame) -> Frames: ...


def columns_for(settings: Settings, task: Task, registry: Registry) -> Columns:
    if task.generate is not None:
        return PromptColumns(settings, registry)
    return StudentColumns(settings, task, registry)


class _Cached:
    """One loaded version and the reference window's encoding under it."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._model: tuple[int, Any] | None = None
        self._reference: tuple[Any, Any] | None = None

    def model(self, version: int, load: Any) -> Any:
        if self._model is None or self._model[0] != version:
            path = self.registry.local_dir(version, self.settings.paths.model_cache_path())
            self._model = (version, load(path))
        return self._model[1]

    def encoded(self, version: int, frame: pd.DataFrame, encode: Any, cached: bool) -> Any:
        key = (version, tuple(frame["request_id"]))
        if cached and self._reference is not None and self._reference[0] == key:
            return self._reference[1]
        encoded = encode(list(frame["text"]))
        if cached:
            self._reference = (key, encoded)
        return encoded


class StudentColumns(_Cached):
    def __init__(self, settings: Settings, task: Task, registry: Registry) -> None:
        super().__init__(settings, registry)
        self.task = task

    def frames(self, version: int, reference: pd.DataFrame, current: pd.DataFrame) -> Frames:
        """Text features, embedding components and predictions, from the serving student."""
        from models.student import Student

        max_tokens = self.settings.serve.max_tokens
        student = self.model(version, lambda path: Student.load(path, max_tokens))
        encoded = [self.encoded(version, reference, student.predict, cached=True)]
        encoded.append(self.encoded(version, current, student.predict, cached=False))
        k = self.settings.monitor.pca_components
        pcs = embedding_components(encoded[0][1], encoded[1][1], k)
        out = []
        for frame, (probs, _), comps in zip((reference, current), encoded, pcs, strict=True):
            texts = list(frame["text"])
            parts = [
                text_features(texts, _unknown_shares(student, texts)),
                comps,
                prediction_features(probs, self.task.label_names),
            ]
            out.append(pd.concat([p.reset_index(drop=True) for p in parts], axis=1))
        return out[0], out[1]


class PromptColumns(_Cached):
    def frames(self, version: int, reference: pd.DataFrame, current: pd.DataFrame) -> Frames:
        """The prompts' text features and the serving LM's embedding components. A byte-level
        tokenizer has no unknown token, so that feature (always 0) is left out."""
        from models.prompt_embedding import PromptEmbedder

        embedder = self.model(version, PromptEmbedder.load)
        pooled = (
            self.encoded(version, reference, embedder.pooled, cached=True),
            self.encoded(version, current, embedder.pooled, cached=False),
        )
        texts = (list(reference["text"]), list(current["text"]))
        return prompt_frames(texts, pooled, self.settings.monitor.pca_components)


def prompt_frames(
    texts: tuple[list[str], list[str]], pooled: tuple[np.ndarray, np.ndarray], k: int
) -> Frames:
    """(reference, current) prompts and their pooled embeddings ((N, H) each) → frames of text
    features and ``k`` principal components fitted on the reference."""
    pcs = embedding_components(pooled[0], pooled[1], k)
    out = []
    for window, comps in zip(texts, pcs, strict=True):
        features = text_features(window).drop(columns="unknown_token_share")
        out.append(pd.concat([features, comps.reset_index(drop=True)], axis=1))
    return out[0], out[1]


def _unknown_shares(student: Any, texts: list[str]) -> list[float]:
    """Share of each text's tokens that the student's tokenizer maps to [UNK], 0..1."""
    tokenizer = student.tokenizer
    unknown = tokenizer.unk_token_id
    encoded = tokenizer(
        texts, truncation=True, max_length=student.max_tokens, add_special_tokens=False
    )
    return [
        float(np.mean([t == unknown for t in ids])) if ids else 0.0 for ids in encoded["input_ids"]
    ]
