"""Losses for a generative student, as pure functions.

Sequence-level knowledge distillation: Kim & Rush (2016), "Sequence-Level Knowledge
Distillation", arXiv:1606.07947, §3.2: train the student on the teacher's own output sequences
(its beam or greedy answer) with the ordinary token-level likelihood. The teacher (Qwen2.5) and
the student (SmolLM2) have different vocabularies, so word-level KD on logits across them is out
of scope; the teacher's text is what crosses. Only the response's tokens are scored; the prompt
(system prompt, user turn, chat template) is context, labelled ``IGNORE``.

Preference pairs: Rafailov et al. (2023), "Direct Preference Optimization: Your Language Model
is Secretly a Reward Model", arXiv:2305.18290, eq. 7:
    L = −log σ(β [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]),
with y_w the chosen response (a correction, or the teacher's answer to a prompt whose student
answer was rated bad) and y_l the student's rated-bad answer. TRL's ``DPOTrainer`` computes the
same sigmoid loss (``loss_type="sigmoid"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # the label of a position that is not scored (F.cross_entropy's ignore_index)


def response_labels(
    input_ids: torch.Tensor, prompt_lengths: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Labels (B, T): ``input_ids`` where the response is, ``IGNORE`` on the prompt's first
    ``prompt_lengths[b]`` tokens and on padding.

    input_ids, attention_mask: (B, T), right-padded; prompt_lengths: (B,).
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
    prompt = positions[None, :] < prompt_lengths[:, None]  # (B, T)
    return input_ids.masked_fill(prompt | (attention_mask == 0), IGNORE)


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token and whether it is scored, shifted as a causal LM
    predicts: position t's logits score token t + 1.

    logits: (B, T, V); labels: (B, T) → (logps (B, T−1), scored (B, T−1) bool).
    """
    targets = labels[:, 1:]  # (B, T−1)
    scored = targets != IGNORE  # (B, T−1)
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T−1, V)
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T−1)
    return picked * scored, scored


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(response | prompt) per sequence: the sum over its scored tokens. (B, T, V) → (B,)."""
    picked, _ = token_logps(logits, labels)
    return picked.sum(-1)


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean negative log-likelihood per scored token, each sequence's tokens weighted by
    ``weights[b]`` (how far its source is trusted; None for all ones). With all weights 1 this
    is ``F.cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=IGNORE)``.

    logits: (B, T, V); labels: (B, T); weights: (B,).
    """
    picked, scored = token_logps(logits, labels)  # (B, T−1)
    w = torch.ones(labels.shape[0], device=logits.device) if weights is None else weights  # (B,)
    per_token = w[:, None] * scored  # (B, T−1)
    total = per_token.sum()
    if float(total) == 0.0:
        return logits.sum() * 0.0
    return -(picked * per_token).sum() / total


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Rafailov et al. (2023), eq. 7, averaged over the pairs. All four are (P,) sequence
    log-probabilities (``sequence_logps``) of the chosen and rejected responses, under the
    policy and under the frozen reference (the round's starting student)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)  # (P,)
    return -F.logsigmoid(beta * margin).mean()
