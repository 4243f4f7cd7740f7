"""General distillation: before a student learns a task's labels, its encoder learns the embedding
teacher's sentence embeddings of unlabelled text.

Jiao et al. (2020), "TinyBERT: Distilling BERT for Natural Language Understanding",
arXiv:1909.10351, §3.2: a general distillation on unlabelled text, then a task-specific one.
Here the general stage's target is the sentence embedding itself (the mean-pooled, L2-normalised
all-MiniLM-L6-v2 state the zero-shot teacher compares with its label prompts; Reimers & Gurevych
2020, arXiv:2004.09813, distil sentence embeddings the same way), so the student must be as wide
as the embedding teacher (``init: teacher_layers``). The loss is 1 − cos: the teacher's
embeddings are unit vectors, the student's pooled states are not.

Why: with an LLM teacher a label costs ~600 ms here, and an embedding ~5 ms. Measured on
sentiment (``bench.retention``, 2,000 LLM labels, 1,600 held-out texts), two epochs on 10,000
texts lifted the students trained 8 epochs at 2e-4 from 0.874 to 0.899 of the LLM's accuracy
(two layers) and from 0.883 to 0.900 (one layer); on 800 labels the one-layer student lost 2.0
points with it and the two-layer one gained 0.2, and the plain 3-epoch recipes without it kept
more (0.929 and 0.918). Not used by the loop: a
recipe for offline students, measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.embedding_teacher import mean_pool


def represent(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    targets: torch.Tensor,
    config: dict[str, Any],
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """``config["epochs"]`` epochs of AdamW (``learning_rate``, ``batch_size``, ``max_tokens``,
    ``seed``) on mean(1 − cos(mean_pool(encoder(text)), target)) over ``texts``; ``model`` is a
    ``BertForSequenceClassification`` whose encoder (``model.bert``) is trained in place, its
    head untouched. targets (N, H), the teacher's embeddings of ``texts``; H must be the
    student's width. Returns per-epoch metrics (epoch, mean loss, texts/s)."""
    encoder = model.bert
    width = encoder.config.hidden_size
    if targets.shape != (len(texts), width):
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} for {len(texts)} texts and a student "
            f"{width} wide: general distillation needs (texts, {width})"
        )
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config["learning_rate"])
    encoder.train()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(config["epochs"]):
        order = np.random.default_rng(config["seed"] + epoch).permutation(len(texts))
        total = 0.0
        for i in range(0, len(order), config["batch_size"]):
            ids = order[i : i + config["batch_size"]]
            loss = _loss(encoder, tokenizer, [texts[j] for j in ids], targets[ids], config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(ids)
        took = time.perf_counter() - start
        metrics = {
            "epoch": epoch + 1,
            "loss": total / max(len(texts), 1),
            "texts_per_s": len(texts) * (epoch + 1) / took,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return history


def _loss(
    encoder: Any, tokenizer: Any, texts: list[str], targets: torch.Tensor, config: dict[str, Any]
) -> torch.Tensor:
    enc = tokenizer(
        texts, truncation=True, max_length=config["max_tokens"], padding=True, return_tensors="pt"
    )
    hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    pooled = mean_pool(hidden.last_hidden_state, enc["attention_mask"])  # (B, H)
    ones = torch.ones(len(texts))  # (B,): every pair should point the same way
    return F.cosine_embedding_loss(pooled, targets, ones)  # mean(1 − cos)
