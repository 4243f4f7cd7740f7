"""The generative student's losses (``training.sequence_kd``) against torch's own functions and
DPO's closed form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.sequence_kd import (
    IGNORE,
    dpo_loss,
    response_labels,
    sequence_logps,
    sft_loss,
)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sequences, right-padded to 6: prompt 2 + response 3, prompt 3 + response 3."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    return ids, mask, torch.tensor([2, 3])


def test_only_the_response_is_labelled() -> None:
    ids, mask, prompts = _batch()
    labels = response_labels(ids, prompts, mask)
    assert labels.tolist() == [[IGNORE, IGNORE, 7, 8, 9, IGNORE], [IGNORE, IGNORE, IGNORE, 4, 5, 6]]


def test_sft_loss_is_torch_cross_entropy_on_the_shifted_response() -> None:
    torch.manual_seed(0)
    ids, mask, prompts = _batch()
    labels = response_labels(ids, prompts, mask)
    logits = torch.randn(2, 6, 11)
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )
    assert torch.allclose(sft_loss(logits, labels), expected, atol=1e-6)


def test_sft_weights_scale_each_sequences_tokens() -> None:
    torch.manual_seed(1)
    ids, mask, prompts = _batch()
    labels = response_labels(ids, prompts, mask)
    logits = torch.randn(2, 6, 11)
    only_second = sft_loss(logits, labels, torch.tensor([0.0, 1.0]))
    expected = F.cross_entropy(logits[1:, :-1].reshape(-1, 11), labels[1:, 1:].reshape(-1),
                               ignore_index=IGNORE)  # fmt: skip
    assert torch.allclose(only_second, expected, atol=1e-6)
    nothing = sft_loss(logits, torch.full_like(labels, IGNORE))
    assert float(nothing) == 0.0 and nothing.requires_grad is False


def test_sequence_logps_sums_the_responses_token_logprobs() -> None:
    torch.manual_seed(2)
    ids, mask, prompts = _batch()
    labels = response_labels(ids, prompts, mask)
    logits = torch.randn(2, 6, 11)
    logps = torch.log_softmax(logits, -1)
    first = logps[0, 1, 7] + logps[0, 2, 8] + logps[0, 3, 9]  # position t scores token t + 1
    second = logps[1, 2, 4] + logps[1, 3, 5] + logps[1, 4, 6]
    assert torch.allclose(sequence_logps(logits, labels), torch.stack([first, second]), atol=1e-5)


def test_dpo_loss_is_the_papers_closed_form() -> None:
    chosen, rejected = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    ref_c, ref_r = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -4.0])
    beta = 0.5
    margins = [((-10 + 11) - (-12 + 11)), ((-4 + 4) - (-3 + 4))]  # 2, −1
    expected = sum(-math.log(1 / (1 + math.exp(-beta * m))) for m in margins) / 2
    assert math.isclose(
        float(dpo_loss(chosen, rejected, ref_c, ref_r, beta)), expected, rel_tol=1e-6
    )
    # equal policy and reference: log 2, whatever the responses
    assert math.isclose(float(dpo_loss(ref_c, ref_r, ref_c, ref_r)), math.log(2), rel_tol=1e-6)
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        dpo_loss(chosen, rejected, ref_c, ref_r, 0.0)
