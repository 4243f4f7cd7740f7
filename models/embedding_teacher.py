"""The zero-shot teacher: all-MiniLM-L6-v2 sentence embeddings compared to one prompt per label.

logits = cos(embed(text), embed(prompt_c)) / temperature, probs = softmax(logits). Embeddings are
mean-pooled over non-padding tokens and L2-normalised (Reimers & Gurevych 2019, Sentence-BERT).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from models.teacher import TeacherBatch, TeacherCost, TeacherHealth, always_up, prompt_hash, softmax


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of token states where ``mask`` is 1. hidden (B, L, H), mask (B, L) → (B, H)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class ZeroShotTeacher:
    """Soft labels for one prompt per label; the order of ``prompts`` is the label order."""

    def __init__(
        self, model_path: Path, prompts: list[str], temperature: float, max_tokens: int = 128
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModel.from_pretrained(str(model_path)).eval()
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.label_embeddings = self.embed(prompts)  # (C, H)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised sentence embeddings, (B, H)."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state  # (B, L, H)
        return F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Cosine similarity to each label prompt over the temperature, (B, C)."""
        return self.logits_and_states(texts, batch_size)[0]

    def logits_and_states(
        self, texts: list[str], batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits (B, C), the sentence embeddings they came from (B, H)): the embeddings are
        the targets of the student's hidden-state loss."""
        logits, states = [], []
        for start in range(0, len(texts), batch_size):
            emb = self.embed(texts[start : start + batch_size])  # (b, H)
            logits.append((emb @ self.label_embeddings.T / self.temperature).numpy())  # (b, C)
            states.append(emb.numpy())
        if not logits:
            width = self.label_embeddings.shape[1]
            empty = np.zeros((0, len(self.label_embeddings)), dtype=np.float32)
            return empty, np.zeros((0, width), dtype=np.float32)
        return np.concatenate(logits).astype(np.float32), np.concatenate(states).astype(np.float32)


class EmbeddingTeacher:
    """``ZeroShotTeacher`` behind the ``Teacher`` protocol. Its id names the model folder and a
    hash of the label prompts and temperature: change either and its labels are another
    teacher's."""

    def __init__(
        self, name: str, model_path: Path, prompts: list[str], temperature: float, max_tokens: int
    ) -> None:
        self.model = ZeroShotTeacher(model_path, prompts, temperature, max_tokens)
        self._id = embedding_teacher_id(name, prompts, temperature, max_tokens)

    @property
    def teacher_id(self) -> str:
        return self._id

    @property
    def has_states(self) -> bool:
        return True

    def label(self, texts: list[str], with_states: bool = False) -> TeacherBatch:
        start = time.perf_counter()
        logits, states = self.model.logits_and_states(texts)  # (B, C), (B, H)
        seconds = time.perf_counter() - start
        return TeacherBatch(
            probs=softmax(logits) if len(texts) else logits,
            logits=logits,
            states=states if with_states else None,
            cost=TeacherCost(seconds=seconds),
        )

    def health(self) -> TeacherHealth:
        return always_up(self._id)


def embedding_teacher_id(name: str, prompts: list[str], temperature: float, max_tokens: int) -> str:
    """``embedding:<model>:<prompt hash>``, computable without loading the model."""
    return f"embedding:{name}:{prompt_hash(prompts, temperature, max_tokens)}"
