"""Distillation losses as pure functions.

Knowledge distillation: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531. Soft targets at temperature T; the KL term is multiplied by T² so its
gradients keep their scale as T changes.

Hidden-state distillation: Jiao et al. (2020), "TinyBERT: Distilling BERT for Natural Language
Understanding", arXiv:1909.10351, eq. 7: MSE(H^S W_h, H^T), with a learned W_h when the student's
width differs from the teacher's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), weighted mean over the batch.

    student_logits, teacher_logits: (B, C); weights: (B,) non-negative, or None for all ones.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, C)
    per_example = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # (B,)
    return _weighted_mean(per_example, weights) * temperature**2


def correction_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy on human corrections. targets (B,) label index, -1 where there is none."""
    has_target = targets >= 0  # (B,)
    if not bool(has_target.any()):
        return student_logits.sum() * 0.0
    per_example = F.cross_entropy(
        student_logits[has_target], targets[has_target], reduction="none"
    )  # (b,)
    selected = None if weights is None else weights[has_target]
    return _weighted_mean(per_example, selected)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    corrections: torch.Tensor,
    temperature: float,
    kd_weight: float,
    correction_weight: float,
    kd_weights: torch.Tensor | None = None,
    ce_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example sum over the whole batch, divided by the batch size B:

        (kd_weight · Σ_i w_i · T² KL_i  +  correction_weight · Σ_{i labelled} c_i · CE_i) / B

    so one human label counts ``correction_weight`` times one teacher label. (Averaging the
    corrections on their own would give the one corrected row of a batch the weight of all its
    teacher rows together: measured here, that cost 8 points of teacher agreement.) w_i is the
    teacher's weight on row i and c_i the human label's (their measured reliability,
    ``feedback.trust``). student_logits, teacher_logits (B, C); corrections (B,) index or -1;
    kd_weights, ce_weights (B,) or None for all ones.
    """
    batch = student_logits.shape[0]
    kd = kd_loss(student_logits, teacher_logits, temperature, kd_weights)  # weighted mean
    kd_mass = batch if kd_weights is None else float(kd_weights.sum())
    has_target = corrections >= 0  # (B,)
    ce = correction_loss(student_logits, corrections, ce_weights)  # weighted mean, labelled rows
    ce_mass = float((has_target if ce_weights is None else ce_weights[has_target]).sum())
    return (kd_weight * kd * kd_mass + correction_weight * ce * ce_mass) / batch


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    projection: torch.nn.Module | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE(projection(h_s), h_t), averaged over the hidden units and the rows ``mask`` keeps.

    student_hidden (B, H_s); teacher_hidden (B, H_t); projection maps H_s → H_t (None when the
    widths match, e.g. a student initialised from teacher layers); mask (B,) bool: rows that carry
    a teacher state (the others contribute nothing).
    """
    projected = student_hidden if projection is None else projection(student_hidden)  # (B, H_t)
    if projected.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"student states have width {projected.shape[-1]} after projection, teacher states "
            f"{teacher_hidden.shape[-1]}: pass a projection"
        )
    per_example = ((projected - teacher_hidden) ** 2).mean(-1)  # (B,)
    if mask is None:
        return per_example.mean()
    if not bool(mask.any()):
        return per_example.sum() * 0.0
    return per_example[mask].mean()


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)
