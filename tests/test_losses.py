"""Losses against naive references written straight from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kd.losses import HintonKDLoss, hinton_kd_loss, soft_target_kl


def naive_kd(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float, T: float) -> torch.Tensor:
    """(1 - alpha) CE(zs, y) + alpha T^2 KL(softmax(zt/T) || softmax(zs/T)), loops and exp/log by hand."""
    batch, classes = zs.shape
    ce = zs.new_zeros(())
    kl = zs.new_zeros(())
    for b in range(batch):
        log_norm = torch.log(sum(torch.exp(zs[b, c]) for c in range(classes)))
        ce = ce - (zs[b, y[b]] - log_norm)
        p = [math.exp(zt[b, c].item() / T) for c in range(classes)]
        p = [v / sum(p) for v in p]
        q_norm = sum(torch.exp(zs[b, c] / T) for c in range(classes))
        for c in range(classes):
            log_q = zs[b, c] / T - torch.log(q_norm)
            kl = kl + p[c] * (math.log(p[c]) - log_q)
    return (1 - alpha) * ce / batch + alpha * T**2 * kl / batch


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_kd_loss_matches_reference_values_and_gradients(alpha: float, temperature: float) -> None:
    generator = torch.Generator().manual_seed(int(alpha * 10 + temperature))
    zs = (3 * torch.randn(5, 7, generator=generator, dtype=torch.float64)).requires_grad_()
    zt = 3 * torch.randn(5, 7, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=generator)

    out = hinton_kd_loss(zs, zt, y, alpha=alpha, temperature=temperature)
    total, ce, kd = out["loss"], out["ce"], out["kd"]
    assert set(out) == {"loss", "ce", "kd"}
    (grad,) = torch.autograd.grad(total, zs)

    zs_ref = zs.detach().clone().requires_grad_()
    reference = naive_kd(zs_ref, zt, y, alpha, temperature)
    (grad_ref,) = torch.autograd.grad(reference, zs_ref)

    torch.testing.assert_close(total, reference)
    torch.testing.assert_close(grad, grad_ref)
    torch.testing.assert_close(total, (1 - alpha) * ce + alpha * kd)


def test_kl_is_batchmean_not_elementwise_mean() -> None:
    zs, zt = torch.randn(8, 100), torch.randn(8, 100)
    per_sample = (zt.softmax(1) * (zt.log_softmax(1) - zs.log_softmax(1))).sum(1)
    torch.testing.assert_close(soft_target_kl(zs, zt, 1.0), per_sample.mean())


def test_kd_term_sends_no_gradient_to_teacher_logits() -> None:
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5, requires_grad=True)
    soft_target_kl(zs, zt, 2.0).backward()
    assert zt.grad is None
    assert zs.grad is not None and zs.grad.abs().sum() > 0


def test_kd_term_is_zero_when_student_equals_teacher() -> None:
    z = torch.randn(6, 4)
    assert soft_target_kl(z, z, 3.0).abs() < 1e-6


def test_module_form_equals_functional() -> None:
    zs, zt, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    module = HintonKDLoss(alpha=0.3, temperature=2.5)
    by_module, by_function = module(zs, zt, y), hinton_kd_loss(zs, zt, y, 0.3, 2.5)
    assert by_module.keys() == by_function.keys()
    for key in by_module:
        torch.testing.assert_close(by_module[key], by_function[key])


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        HintonKDLoss(temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        soft_target_kl(torch.randn(2, 3), torch.randn(2, 3), temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_must_be_in_unit_interval(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        HintonKDLoss(alpha=alpha)


def test_class_count_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match="same number of classes"):
        soft_target_kl(torch.randn(2, 3), torch.randn(2, 5))
