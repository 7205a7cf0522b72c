"""Born-Again losses (BAN, BAN+L, CWTM, DKPP) against naive references written from the papers' formulas.

(The ``"kd"`` entry is Hinton's loss, checked against its own naive reference in test_losses.py.)
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from lightning_kd.losses import (
    BORN_AGAIN_LOSSES,
    BornAgainLoss,
    ban_label_loss,
    ban_loss,
    born_again_loss,
    cwtm_loss,
    cwtm_weights,
    dkpp_loss,
    hinton_kd_loss,
    permute_non_argmax,
)


def naive_softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def naive_soft_ce(zs: torch.Tensor, targets: list[list[float]]) -> torch.Tensor:
    """-(1/B) sum_b sum_c p[b][c] log softmax(zs[b])[c], with the log-softmax by hand (differentiable in zs)."""
    total = zs.new_zeros(())
    for b, p in enumerate(targets):
        log_norm = torch.log(sum(torch.exp(zs[b, c]) for c in range(zs.shape[1])))
        total = total - sum(p[c] * (zs[b, c] - log_norm) for c in range(zs.shape[1]))
    return total / zs.shape[0]


def naive_ce(zs: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    per_sample = []
    for b in range(zs.shape[0]):
        log_norm = torch.log(sum(torch.exp(zs[b, c]) for c in range(zs.shape[1])))
        per_sample.append(-(zs[b, int(y[b])] - log_norm))
    return per_sample


def logits(seed: int, batch: int = 6, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zs = (2 * torch.randn(batch, classes, generator=g, dtype=torch.float64)).requires_grad_()
    zt = 2 * torch.randn(batch, classes, generator=g, dtype=torch.float64)
    return zs, zt, torch.randint(0, classes, (batch,), generator=g)


def grad(loss: torch.Tensor, zs: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, zs)[0]


@pytest.mark.parametrize("seed", range(3))
def test_ban_is_cross_entropy_against_teacher_softmax(seed: int) -> None:
    zs, zt, _ = logits(seed)
    reference = naive_soft_ce(zs, [naive_softmax(row) for row in zt.tolist()])
    torch.testing.assert_close(ban_loss(zs, zt)["loss"], reference)
    torch.testing.assert_close(grad(ban_loss(zs, zt)["loss"], zs), grad(reference, zs))


@pytest.mark.parametrize("seed", range(3))
def test_ban_plus_labels_is_an_unweighted_sum(seed: int) -> None:
    zs, zt, y = logits(seed)
    out = ban_label_loss(zs, zt, y)
    total, ce, kd = out["loss"], out["ce"], out["kd"]
    kd_ref = naive_soft_ce(zs, [naive_softmax(row) for row in zt.tolist()])
    ce_ref = sum(naive_ce(zs, y)) / len(y)
    torch.testing.assert_close(ce, ce_ref)
    torch.testing.assert_close(kd, kd_ref)
    torch.testing.assert_close(total, ce_ref + kd_ref)
    torch.testing.assert_close(grad(total, zs), grad(ce_ref + kd_ref, zs))


@pytest.mark.parametrize("seed", range(3))
def test_cwtm_weights_each_sample_by_teacher_max(seed: int) -> None:
    zs, zt, y = logits(seed)
    top = [max(naive_softmax(row)) for row in zt.tolist()]
    weights = [t / sum(top) for t in top]
    reference = sum(w * ce for w, ce in zip(weights, naive_ce(zs, y), strict=True))
    torch.testing.assert_close(cwtm_loss(zs, zt, y)["loss"], reference)
    torch.testing.assert_close(grad(cwtm_loss(zs, zt, y)["loss"], zs), grad(reference, zs))
    torch.testing.assert_close(cwtm_weights(zt), torch.tensor(weights, dtype=torch.float64))
    torch.testing.assert_close(cwtm_weights(zt).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_cwtm_uses_teacher_max_even_where_the_teacher_is_wrong() -> None:
    zt = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([1, 2, 1])  # the teacher is confidently wrong on sample 0
    p_max = torch.softmax(zt, 1).amax(1)
    expected = p_max / p_max.sum()
    torch.testing.assert_close(cwtm_weights(zt), expected)
    assert cwtm_weights(zt)[0] > cwtm_weights(zt)[1]  # wrong but confident outweighs unsure
    zs = torch.zeros(3, 3)
    torch.testing.assert_close(cwtm_loss(zs, zt, y)["loss"], torch.tensor(math.log(3.0)))  # uniform student: CE = log 3


def test_dkpp_keeps_argmax_and_permutes_the_rest_within_each_row() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 10, generator=g), dim=1)
    permuted = permute_non_argmax(probs, g)
    assert torch.equal(permuted.argmax(1), probs.argmax(1))
    rows = torch.arange(64)
    torch.testing.assert_close(permuted[rows, probs.argmax(1)], probs[rows, probs.argmax(1)], rtol=0, atol=0)
    # each row holds exactly its own values (a permutation within the sample, never across samples)
    assert torch.equal(permuted.sort(1).values, probs.sort(1).values)
    assert not torch.equal(permuted, probs)


def test_dkpp_permutations_are_independent_per_sample_and_redrawn() -> None:
    row = torch.tensor([0.5, 0.05, 0.1, 0.15, 0.2])
    probs = row.repeat(200, 1)
    first = permute_non_argmax(probs)
    second = permute_non_argmax(probs)
    assert len({tuple(r.tolist()) for r in first}) > 10  # samples get different permutations
    assert not torch.equal(first, second)  # a new draw every call
    # each non-argmax value lands in each of the 4 other positions about a quarter of the time
    draws = permute_non_argmax(row.repeat(8000, 1), torch.Generator().manual_seed(1))
    counts = Counter(draws[:, 1].tolist())
    for value in row[1:].tolist():
        assert abs(counts[value] / 8000 - 0.25) < 0.03


def test_dkpp_loss_is_ban_against_the_permuted_teacher() -> None:
    zs, zt, _ = logits(0)
    target = permute_non_argmax(torch.softmax(zt, 1), torch.Generator().manual_seed(5))
    reference = naive_soft_ce(zs, target.tolist())
    loss = dkpp_loss(zs, zt, torch.Generator().manual_seed(5))["loss"]
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad(loss, zs), grad(reference, zs))


@pytest.mark.parametrize("name", BORN_AGAIN_LOSSES)
def test_no_gradient_reaches_the_teacher(name: str) -> None:
    zs = torch.randn(4, 6, requires_grad=True)
    zt = torch.randn(4, 6, requires_grad=True)
    born_again_loss(name, zs, zt, torch.tensor([0, 1, 2, 3]))["loss"].backward()
    assert zt.grad is None
    assert zs.grad is not None and zs.grad.abs().sum() > 0


def test_module_selects_by_name_and_refuses_unknown_names() -> None:
    zs, zt, y = logits(1)
    torch.testing.assert_close(BornAgainLoss("cwtm")(zs, zt, y)["loss"], cwtm_loss(zs, zt, y)["loss"])
    assert set(BornAgainLoss("ban+l")(zs, zt, y)) == {"loss", "ce", "kd"}
    with pytest.raises(ValueError, match=r"unknown Born-Again loss 'kl'.*ban, ban\+l, cwtm, dkpp, kd"):
        BornAgainLoss("kl")


def test_kd_by_name_is_hintons_loss() -> None:
    zs, zt, y = logits(2)
    parts = BornAgainLoss("kd", alpha=0.7, temperature=3.0)(zs, zt, y)
    reference = hinton_kd_loss(zs, zt, y, alpha=0.7, temperature=3.0)
    assert parts.keys() == reference.keys() == {"loss", "ce", "kd"}
    for key in parts:
        torch.testing.assert_close(parts[key], reference[key])


def test_mismatched_class_counts_are_named() -> None:
    with pytest.raises(ValueError, match="same number of classes"):
        ban_loss(torch.randn(2, 3), torch.randn(2, 4))


@pytest.mark.parametrize("name", ["ban", "ban+l", "cwtm", "dkpp"])
@pytest.mark.parametrize("kwargs", [{"alpha": 0.5}, {"temperature": 2.0}])
def test_the_papers_losses_refuse_alpha_and_temperature(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="apply to loss='kd' only"):
        BornAgainLoss(name, **kwargs)


def test_every_loss_returns_a_dict_with_the_total() -> None:
    zs, zt, y = logits(3)
    for name in BORN_AGAIN_LOSSES:
        out = born_again_loss(name, zs, zt, y)
        assert isinstance(out, dict) and out["loss"].ndim == 0, name
