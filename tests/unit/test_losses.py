"""Distillation losses: the KD term against torch's own KL, weights, corrections, the mix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.losses import correction_loss, distillation_loss, kd_loss


def _reference_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    return (
        F.kl_div(
            F.log_softmax(student / t, dim=-1),
            F.softmax(teacher / t, dim=-1),
            reduction="batchmean",
        )
        * t**2
    )


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_kd_loss_matches_torch_kl_div(classes: int, temperature: float) -> None:
    gen = torch.Generator().manual_seed(classes * 100 + int(temperature * 10))
    student = torch.randn(7, classes, generator=gen) * 3
    teacher = torch.randn(7, classes, generator=gen) * 3
    got = kd_loss(student, teacher, temperature)
    expected = _reference_kd(student, teacher, temperature)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert got.item() > 0


def test_kd_loss_is_zero_when_student_equals_teacher() -> None:
    logits = torch.randn(4, 3)
    assert kd_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_scales_with_temperature_squared() -> None:
    # With logits scaled by T the soft distributions are the same, so only the T² factor differs.
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    base = kd_loss(student, teacher, 1.0)
    scaled = kd_loss(student * 3, teacher * 3, 3.0)
    assert scaled.item() == pytest.approx(9 * base.item(), rel=1e-5)


def test_kd_loss_all_ones_weights_equal_unweighted() -> None:
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    unweighted = kd_loss(student, teacher, 2.0)
    weighted = kd_loss(student, teacher, 2.0, torch.ones(6))
    assert weighted.item() == pytest.approx(unweighted.item(), rel=1e-6)


def test_kd_loss_zero_weight_removes_a_row() -> None:
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    student[2, 0] += 50  # a row that would dominate the mean if it counted
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    keep = torch.tensor([0, 1, 3, 4])
    got = kd_loss(student, teacher, 1.5, weights)
    expected = _reference_kd(student[keep], teacher[keep], 1.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() < kd_loss(student, teacher, 1.5).item()


def test_kd_loss_fractional_weights_are_a_weighted_mean() -> None:
    student, teacher = torch.randn(3, 2), torch.randn(3, 2)
    per_row = torch.stack(
        [_reference_kd(student[i : i + 1], teacher[i : i + 1], 1.0) for i in range(3)]
    )
    weights = torch.tensor([0.5, 2.0, 1.5])
    expected = (per_row * weights).sum() / weights.sum()
    assert kd_loss(student, teacher, 1.0, weights).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_kd_loss_all_zero_weights_give_zero_not_nan() -> None:
    loss = kd_loss(torch.randn(3, 2), torch.randn(3, 2), 1.0, torch.zeros(3))
    assert loss.item() == 0.0


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_kd_loss_rejects_non_positive_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(torch.randn(2, 2), torch.randn(2, 2), temperature)


def test_kd_loss_gradient_flows_to_student_only() -> None:
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3)
    kd_loss(student, teacher, 2.0).backward()
    assert student.grad is not None
    assert student.grad.abs().sum().item() > 0


def test_correction_loss_ignores_minus_one_targets() -> None:
    logits = torch.randn(5, 3)
    targets = torch.tensor([2, -1, 0, -1, 1])
    rows = targets >= 0
    expected = F.cross_entropy(logits[rows], targets[rows])
    assert correction_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_correction_loss_rows_without_target_do_not_matter() -> None:
    logits = torch.randn(4, 2)
    targets = torch.tensor([1, -1, 0, -1])
    changed = logits.clone()
    changed[1] = torch.tensor([100.0, -100.0])
    changed[3] = torch.tensor([-100.0, 100.0])
    assert correction_loss(changed, targets).item() == pytest.approx(
        correction_loss(logits, targets).item(), rel=1e-6
    )


def test_correction_loss_with_weights_uses_the_target_rows_weights() -> None:
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, -1, 2, 1])
    weights = torch.tensor([1.0, 100.0, 3.0, 0.0])
    per_row = F.cross_entropy(logits[[0, 2, 3]], targets[[0, 2, 3]], reduction="none")
    expected = (per_row * weights[[0, 2, 3]]).sum() / weights[[0, 2, 3]].sum()
    got = correction_loss(logits, targets, weights)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_correction_loss_without_targets_is_zero_with_grad() -> None:
    logits = torch.randn(3, 2, requires_grad=True)
    loss = correction_loss(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros(3, 2))


def test_distillation_loss_sums_per_example_over_the_batch() -> None:
    """Each term is a per-example sum over the batch divided by B (one correction = one row)."""
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    corrections = torch.tensor([-1, 2, -1, 0, -1, -1])
    kd_weights = (corrections < 0).float()
    log_q = F.log_softmax(student / 2.0, dim=-1)
    p = F.softmax(teacher / 2.0, dim=-1)
    kd_rows = (p * (p.log() - log_q)).sum(-1) * 4.0  # (B,) T² KL per row
    ce_rows = F.cross_entropy(student[[1, 3]], corrections[[1, 3]], reduction="none")
    expected = (0.3 * (kd_rows * kd_weights).sum() + 1.7 * ce_rows.sum()) / 6
    got = distillation_loss(student, teacher, corrections, 2.0, 0.3, 1.7, kd_weights)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_one_correction_weighs_as_much_as_one_teacher_row_not_a_whole_batch() -> None:
    student, teacher = torch.randn(32, 2), torch.randn(32, 2)
    corrections = torch.full((32,), -1)
    corrections[0] = 1
    kd_weights = (corrections < 0).float()
    only_ce = distillation_loss(student, teacher, corrections, 1.0, 0.0, 1.0, kd_weights)
    one_row = F.cross_entropy(student[:1], corrections[:1])
    assert only_ce.item() == pytest.approx(one_row.item() / 32, rel=1e-5)


def test_distillation_loss_kd_weights_do_not_weight_corrections() -> None:
    student, teacher = torch.randn(4, 2), torch.randn(4, 2)
    corrections = torch.tensor([1, 0, -1, -1])
    kd_weights = torch.tensor([0.0, 0.0, 1.0, 1.0])
    got = distillation_loss(student, teacher, corrections, 1.0, 0.0, 1.0, kd_weights)
    expected = F.cross_entropy(student[:2], corrections[:2], reduction="sum") / 4
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_hidden_state_loss_is_mse_after_the_projection() -> None:
    from training.losses import hidden_state_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(6, 8), torch.randn(6, 12)  # (B, H_s), (B, H_t)
    projection = torch.nn.Linear(8, 12)
    expected = F.mse_loss(projection(student), teacher)
    assert torch.allclose(hidden_state_loss(student, teacher, projection), expected)
    same = torch.randn(6, 12)
    assert torch.allclose(hidden_state_loss(same, teacher), F.mse_loss(same, teacher))


def test_hidden_state_loss_only_counts_rows_with_a_teacher_state() -> None:
    from training.losses import hidden_state_loss

    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    mask = torch.tensor([True, False, True, False])
    expected = F.mse_loss(student[mask], teacher[mask])
    assert torch.allclose(hidden_state_loss(student, teacher, None, mask), expected)
    none = torch.zeros(4, dtype=torch.bool)
    assert float(hidden_state_loss(student.requires_grad_(), teacher, None, none)) == 0.0


def test_hidden_state_loss_names_a_width_mismatch() -> None:
    from training.losses import hidden_state_loss

    with pytest.raises(ValueError, match="width 5 after projection, teacher states 7"):
        hidden_state_loss(torch.randn(2, 5), torch.randn(2, 7))


def test_hidden_state_loss_trains_the_projection() -> None:
    from training.losses import hidden_state_loss

    torch.manual_seed(1)
    student = torch.randn(64, 4)
    teacher = student @ torch.randn(4, 6)  # a linear map exists
    projection = torch.nn.Linear(4, 6)
    optimizer = torch.optim.Adam(projection.parameters(), lr=0.05)
    first = float(hidden_state_loss(student, teacher, projection))
    for _ in range(300):
        optimizer.zero_grad()
        hidden_state_loss(student, teacher, projection).backward()
        optimizer.step()
    assert float(hidden_state_loss(student, teacher, projection)) < first * 0.01


def test_ce_weights_scale_each_human_label_against_f_cross_entropy() -> None:
    """c_i · CE_i summed over labelled rows, over B: a half-trusted label counts half."""
    student, teacher = torch.randn(5, 2), torch.randn(5, 2)
    corrections = torch.tensor([1, -1, 0, 1, -1])
    ce_weights = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0])
    got = distillation_loss(
        student, teacher, corrections, 1.0, 0.0, 2.0, torch.zeros(5), ce_weights
    )
    ce = F.cross_entropy(student, corrections.clamp(min=0), reduction="none")  # (B,)
    expected = 2.0 * (ce[0] * 1.0 + ce[2] * 0.5) / 5
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    unweighted = distillation_loss(student, teacher, corrections, 1.0, 0.0, 2.0, torch.zeros(5))
    assert unweighted.item() == pytest.approx(2.0 * (ce[0] + ce[2] + ce[3]).item() / 5, rel=1e-5)
