"""The round's Ray-free parts: batch tensors with teacher states, the hidden-state loss wired
into ``fit`` with a learned projection, and a student started from teacher layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from distillery.settings import StudentSettings
from models.embedding_teacher import mean_pool
from models.student import new_student
from training.round import _attach_projection, _tensors, fit

LABELS = ["negative", "positive"]
TEXTS = ["the movie was good", "bad", "i love it !", "terrible film", "great", "a movie"]


def _frame(width: int, with_states: list[bool]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "text": TEXTS,
            "teacher_logits": [rng.normal(size=2).astype(np.float32) for _ in TEXTS],
            "correction": -1,
            "kd_weight": 1.0,
            "teacher_embedding": [
                rng.normal(size=width).astype(np.float32) if keep else None for keep in with_states
            ],
        }
    )


def test_tensors_carry_teacher_states_and_a_mask_for_rows_without_one(
    tiny_tokenizer: BertTokenizer,
) -> None:
    frame = _frame(6, [True, False, True, True, False, True])
    t = _tensors(frame, tiny_tokenizer, 16, teacher_width=6)
    assert t["teacher_hidden"].shape == (6, 6)
    assert t["has_hidden"].tolist() == [True, False, True, True, False, True]
    assert torch.all(t["teacher_hidden"][1] == 0)
    assert np.allclose(t["teacher_hidden"][0].numpy(), frame["teacher_embedding"][0])
    assert "teacher_hidden" not in _tensors(frame, tiny_tokenizer, 16)  # no hidden loss


def _config(hidden_weight: float, width: int) -> dict:
    return {
        "epochs": 30, "learning_rate": 1e-2, "batch_size": 6, "seed": 0, "kd_temperature": 1.0,
        "kd_weight": 1.0, "correction_weight": 1.0, "max_tokens": 16,
        "hidden_weight": hidden_weight, "teacher_width": width, "init_dir": None,
    }  # fmt: skip


def _hidden_error(model: torch.nn.Module, frame: pd.DataFrame, tokenizer: BertTokenizer) -> float:
    t = _tensors(frame, tokenizer, 16, teacher_width=6)
    with torch.no_grad():
        out = model(t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True)
        pooled = model.hidden_projection(mean_pool(out.hidden_states[-1], t["attention_mask"]))
    return float(((pooled - t["teacher_hidden"]) ** 2).mean())


def test_fit_with_a_hidden_weight_pulls_projected_states_to_the_teacher(
    tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings
) -> None:
    frame = _frame(6, [True] * len(TEXTS))
    errors = {}
    for weight in (0.0, 1.0):
        model = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size, seed=0)
        _attach_projection(model, _config(1.0, 6))  # the same W_h start for both
        assert model.hidden_projection.in_features == tiny_shape.hidden
        fit(model, frame, tiny_tokenizer, _config(weight, 6))
        errors[weight] = _hidden_error(model, frame, tiny_tokenizer)
    assert errors[1.0] < errors[0.0] * 0.5, errors


def test_no_projection_without_a_hidden_weight_or_when_widths_match(
    tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings
) -> None:
    model = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size, seed=0)
    _attach_projection(model, _config(0.0, 6))
    _attach_projection(model, _config(1.0, tiny_shape.hidden))
    assert not hasattr(model, "hidden_projection")


def test_a_student_from_teacher_layers_copies_embeddings_and_the_first_layers(
    tmp_path: Path, tiny_tokenizer: BertTokenizer
) -> None:
    config = BertConfig(
        vocab_size=tiny_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=3,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = BertModel(config)
    teacher.save_pretrained(tmp_path)
    shape = StudentSettings(init="teacher_layers", layers=1)
    student = new_student(LABELS, shape, tiny_tokenizer.vocab_size, teacher_path=tmp_path)
    assert len(student.bert.encoder.layer) == 1
    assert student.config.hidden_size == 16 and student.config.id2label == {
        0: "negative",
        1: "positive",
    }
    for mine, theirs in (
        (student.bert.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight),
        (
            student.bert.encoder.layer[0].attention.self.query.weight,
            teacher.encoder.layer[0].attention.self.query.weight,
        ),
    ):
        assert torch.equal(mine, theirs)
