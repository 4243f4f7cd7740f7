"""General distillation: the encoder learns the teacher's sentence embeddings; the head is left."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillery.settings import StudentSettings
from models.embedding_teacher import mean_pool
from models.student import new_student
from training.represent import represent

TEXTS = ["the film was good", "a bad film", "good", "the bad one", "was it good", "bad bad"] * 3
CONFIG = {"epochs": 6, "learning_rate": 3e-3, "batch_size": 6, "max_tokens": 16, "seed": 0}


def _cosines(model: torch.nn.Module, tokenizer: object, targets: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")  # type: ignore[operator]
        hidden = model.bert(**enc).last_hidden_state  # type: ignore[attr-defined]
        return F.cosine_similarity(mean_pool(hidden, enc["attention_mask"]), targets, dim=-1)


def test_the_student_turns_towards_the_teachers_embeddings_and_keeps_its_head(
    tiny_tokenizer: object, tiny_shape: StudentSettings
) -> None:
    torch.manual_seed(1)
    model = new_student(["negative", "positive"], tiny_shape, tiny_tokenizer.vocab_size)  # type: ignore[attr-defined]
    targets = F.normalize(torch.randn(len(TEXTS), tiny_shape.hidden), dim=-1)  # (N, H)
    before = _cosines(model, tiny_tokenizer, targets)
    head = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    history = represent(model, tiny_tokenizer, TEXTS, targets, CONFIG)
    after = _cosines(model, tiny_tokenizer, targets)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["loss"] < history[0]["loss"]
    assert after.mean() > before.mean() + 0.2, (before.mean(), after.mean())
    for key, value in model.classifier.state_dict().items():
        assert torch.equal(value, head[key])  # only the encoder learns here


def test_targets_of_another_width_are_refused_naming_both(
    tiny_tokenizer: object, tiny_shape: StudentSettings
) -> None:
    model = new_student(["negative", "positive"], tiny_shape, tiny_tokenizer.vocab_size)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"\(18, 384\).*16 wide"):
        represent(model, tiny_tokenizer, TEXTS, torch.zeros(len(TEXTS), 384), CONFIG)
