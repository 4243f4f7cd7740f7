"""The student: length buckets, label order, probabilities, batching invariance, PCA init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from distillery.settings import StudentSettings
from models.student import Student, length_buckets, new_student, project_embeddings

LABELS = ["against", "neutral", "favour"]
TEXTS = [
    "the movie was good",
    "bad",
    "i love it !",
    "the film is not very good . i hate it",
    "great",
    "terrible terrible terrible film",
    "a movie",
]


@pytest.fixture(scope="module")
def student(tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings) -> Student:
    model = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size, seed=0)
    return Student(model, tiny_tokenizer, max_tokens=32)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 10])
def test_length_buckets_cover_every_index_once_sorted_by_length(batch_size: int) -> None:
    lengths = [5, 1, 9, 3, 3, 7, 2, 8]
    buckets = length_buckets(lengths, batch_size)
    flat = [i for bucket in buckets for i in bucket]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(0 < len(b) <= batch_size for b in buckets)
    assert [len(b) for b in buckets[:-1]] == [batch_size] * (len(buckets) - 1)
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_length_buckets_of_nothing() -> None:
    assert length_buckets([], 4) == []


def test_new_student_follows_the_label_order(
    student: Student, tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings
) -> None:
    assert student.labels == LABELS
    config = student.model.config
    assert config.num_labels == 3
    assert config.label2id == {"against": 0, "neutral": 1, "favour": 2}
    assert config.hidden_size == 16
    assert config.num_hidden_layers == 1
    assert config.vocab_size == tiny_tokenizer.vocab_size
    other = new_student(["b", "a"], tiny_shape, tiny_tokenizer.vocab_size)
    assert Student(other, tiny_tokenizer).labels == ["b", "a"]


def test_predict_proba_shape_and_rows_sum_to_one(student: Student) -> None:
    probs = student.predict_proba(TEXTS)
    assert probs.shape == (len(TEXTS), 3)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs > 0).all()
    assert not np.allclose(probs, probs[0])  # different texts, different answers


def test_predictions_do_not_depend_on_batching(student: Student) -> None:
    one_by_one = np.concatenate([student.predict_proba([t]) for t in TEXTS])
    together = student.predict_proba(TEXTS)
    small_buckets = student.predict_proba(TEXTS, batch_size=2)
    reversed_order = student.predict_proba(TEXTS[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(small_buckets, one_by_one, atol=1e-5)
    np.testing.assert_allclose(reversed_order, one_by_one, atol=1e-5)


def test_long_texts_are_truncated_to_max_tokens(
    tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings
) -> None:
    model = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size)
    short = Student(model, tiny_tokenizer, max_tokens=8)
    long_text = "good " * 500  # far beyond max_positions=64
    probs = short.predict_proba([long_text, "good good good good good good"])
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)  # both are [CLS] good×6 [SEP]


def test_same_seed_same_weights(tiny_tokenizer: BertTokenizer, tiny_shape: StudentSettings) -> None:
    a = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size, seed=5)
    b = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size, seed=5)
    c = new_student(LABELS, tiny_shape, tiny_tokenizer.vocab_size, seed=6)
    weight = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_save_and_load_round_trip(student: Student, tmp_path: Path) -> None:
    student.model.save_pretrained(tmp_path)
    student.tokenizer.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    loaded = Student.load(tmp_path, max_tokens=32)
    assert loaded.labels == LABELS
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), student.predict_proba(TEXTS), atol=1e-5)


def test_project_embeddings_shape_and_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(50, 24, generator=gen) @ torch.randn(24, 24, generator=gen)
    projected = project_embeddings(teacher, 8)
    assert projected.shape == (50, 8)
    assert projected.std().item() == pytest.approx(0.2, rel=1e-4)
    torch.testing.assert_close(projected.mean(0), torch.zeros(8), atol=1e-5, rtol=0)


def test_project_embeddings_keeps_the_main_directions() -> None:
    # Rows that vary along one axis only: the first component carries all of the variance.
    gen = torch.Generator().manual_seed(1)
    scale = torch.randn(40, 1, generator=gen)
    direction = torch.randn(1, 12, generator=gen)
    projected = project_embeddings(scale @ direction, 3)
    assert projected.shape == (40, 3)
    first = projected[:, 0]
    assert abs(torch.corrcoef(torch.stack([first, scale[:, 0]]))[0, 1].item()) > 0.999
    assert projected[:, 1:].abs().max().item() < 1e-3 * first.abs().max().item()


def test_int8_student_stays_close_to_fp32(student: Student, tmp_path: Path) -> None:
    student.model.save_pretrained(tmp_path)
    student.tokenizer.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    texts = ["good film", "bad film", "the plot was fine", "awful", "great great great"]
    fp32 = Student.load(tmp_path, 32).predict_proba(texts)  # (5, C)
    int8 = Student.load(tmp_path, 32, quantize=True)
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    np.testing.assert_allclose(int8.predict_proba(texts), fp32, atol=0.05)


def test_predict_matches_the_model_and_pools_only_real_tokens(student: Student) -> None:
    probs, pooled = student.predict(TEXTS)
    assert pooled.shape == (len(TEXTS), student.model.config.hidden_size)
    enc = student.tokenizer(TEXTS, padding=True, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        out = student.model(**enc, output_hidden_states=True)
    np.testing.assert_allclose(probs, torch.softmax(out.logits, -1).numpy(), atol=1e-5)
    mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
    mean = (out.hidden_states[-1] * mask).sum(1) / mask.sum(1)  # (B, H)
    np.testing.assert_allclose(pooled, mean.numpy(), atol=1e-4)
    assert student.novelty(pooled) is None  # saved without a reference


def test_a_student_saved_with_a_reference_scores_novelty(student: Student, tmp_path: Path) -> None:
    from models.novelty import fit_reference

    student.model.save_pretrained(tmp_path)
    student.tokenizer.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    _, pooled = student.predict(TEXTS)
    fit_reference(pooled).save(tmp_path)
    loaded = Student.load(tmp_path, max_tokens=32)
    scores = loaded.novelty(loaded.predict(TEXTS)[1])
    assert scores is not None and scores.shape == (len(TEXTS),)
    assert np.quantile(scores, 0.95) == pytest.approx(1.0, rel=1e-4)  # units of the 95th pct
