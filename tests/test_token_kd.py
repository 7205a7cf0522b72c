"""Token-level divergences against their formulas, written out per token in float64."""

from __future__ import annotations

import pytest
import torch

from lightning_kd.errors import Refusal
from lightning_kd.losses import generalized_jsd, reverse_kl, token_divergence


def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) of two distributions over the last dimension, by the definition."""
    return (a * (a.log() - b.log())).sum(-1)


def reference(name: str, zs: torch.Tensor, zt: torch.Tensor, beta: float, temperature: float) -> torch.Tensor:
    q, p = (zs / temperature).softmax(-1), (zt / temperature).softmax(-1)
    if name == "forward_kl":
        per_token = kl(p, q)
    elif name == "reverse_kl":
        per_token = kl(q, p)
    else:
        m = beta * p + (1 - beta) * q
        per_token = beta * kl(p, m) + (1 - beta) * kl(q, m)
    return per_token.mean() * temperature**2


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_each_divergence_is_its_formula_and_only_the_student_gets_a_gradient(name: str, temperature: float) -> None:
    torch.manual_seed(0)
    zs = torch.randn(3, 5, 11, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(3, 5, 11, dtype=torch.float64, requires_grad=True)
    beta = 0.3 if name == "jsd" else 0.5
    value = token_divergence(name, zs, zt, beta=beta, temperature=temperature)
    torch.testing.assert_close(value, reference(name, zs, zt, beta, temperature), rtol=1e-12, atol=1e-14)
    value.backward()
    assert zs.grad is not None and torch.count_nonzero(zs.grad) > 0
    assert zt.grad is None  # the teacher is a constant


def test_beta_runs_from_forward_kl_to_reverse_kl() -> None:
    torch.manual_seed(1)
    zs, zt = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    forward, backward = token_divergence("forward_kl", zs, zt), reverse_kl(zs, zt)
    assert torch.equal(generalized_jsd(zs, zt, beta=0.0), forward)
    assert torch.equal(generalized_jsd(zs, zt, beta=1.0), backward)
    # the ends are the limits once scaled: JSD(beta) / beta -> KL(p || q), JSD(beta) / (1 - beta) -> KL(q || p)
    torch.testing.assert_close(generalized_jsd(zs, zt, beta=1e-6) / 1e-6, forward, rtol=1e-4, atol=0)
    torch.testing.assert_close(generalized_jsd(zs, zt, beta=1 - 1e-6) / 1e-6, backward, rtol=1e-4, atol=0)
    assert float(generalized_jsd(zs, zt, beta=0.5)) <= 0.5 * float(forward + backward)  # JSD is bounded by them


def test_bad_arguments_are_refused() -> None:
    z = torch.randn(2, 3)
    with pytest.raises(Refusal, match="beta must be in"):
        generalized_jsd(z, z, beta=1.5)
    with pytest.raises(Refusal, match="beta applies to the 'jsd' divergence only"):
        token_divergence("reverse_kl", z, z, beta=0.2)
    with pytest.raises(Refusal, match="token divergence"):
        token_divergence("tvd", z, z)
