"""DIST and KD on standardised logits against naive references written from their papers' formulas, and as tasks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_kd import DIST, LogitStandardisedKD
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses import dist_loss, standardised_kd_loss
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import cpu_trainer


def pearson(u: list[float], v: list[float]) -> float:
    """Pearson's correlation of two lists, from its definition (the authors' 1e-8 in the denominator)."""
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    cov = sum((a - mu) * (b - mv) for a, b in zip(u, v, strict=True))
    su = math.sqrt(sum((a - mu) ** 2 for a in u))
    sv = math.sqrt(sum((b - mv) ** 2 for b in v))
    return cov / (su * sv + 1e-8)


def naive_dist(zs: torch.Tensor, zt: torch.Tensor, T: float) -> tuple[float, float]:
    """DIST's two relation terms, row by row and column by column: ``T^2 (1 - mean rho)``."""
    ps = [[math.exp(v / T) for v in row] for row in zs.tolist()]
    ps = [[v / sum(row) for v in row] for row in ps]
    pt = [[math.exp(v / T) for v in row] for row in zt.tolist()]
    pt = [[v / sum(row) for v in row] for row in pt]
    inter = sum(pearson(a, b) for a, b in zip(ps, pt, strict=True)) / len(ps)
    columns = range(len(ps[0]))
    intra = sum(pearson([r[c] for r in ps], [r[c] for r in pt]) for c in columns) / len(columns)
    return T**2 * (1 - inter), T**2 * (1 - intra)


@pytest.mark.parametrize(("batch", "classes", "temperature"), [(8, 10, 4.0), (5, 3, 1.0), (16, 100, 4.0), (3, 7, 2.5)])
def test_dist_equals_the_formula_in_value_and_gradient(batch: int, classes: int, temperature: float) -> None:
    torch.manual_seed(batch + classes)
    zs = (torch.randn(batch, classes, dtype=torch.float64) * 3).requires_grad_()
    zt = torch.randn(batch, classes, dtype=torch.float64) * 3
    y = torch.randint(0, classes, (batch,))
    out = dist_loss(zs, zt, y, inter_weight=2.0, intra_weight=3.0, temperature=temperature, ce_weight=0.5)
    inter, intra = naive_dist(zs.detach(), zt, temperature)
    assert float(out["inter"]) == pytest.approx(inter, rel=1e-10, abs=1e-12)
    assert float(out["intra"]) == pytest.approx(intra, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(out["ce"], F.cross_entropy(zs, y))
    torch.testing.assert_close(out["loss"], 0.5 * out["ce"] + 2.0 * out["inter"] + 3.0 * out["intra"])
    # the gradient against autograd through a second, tensor form of the formula (softmax, centre, cosine)
    (grad,) = torch.autograd.grad(out["loss"], zs)

    def by_hand(z: torch.Tensor) -> torch.Tensor:
        p, q = (z / temperature).softmax(1), (zt / temperature).softmax(1)

        def rho(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            a, b = a - a.mean(), b - b.mean()
            return (a * b).sum() / (a.norm() * b.norm() + 1e-8)

        inter = 1 - torch.stack([rho(p[i], q[i]) for i in range(batch)]).mean()
        intra = 1 - torch.stack([rho(p[:, c], q[:, c]) for c in range(classes)]).mean()
        return 0.5 * F.cross_entropy(z, y) + temperature**2 * (2.0 * inter + 3.0 * intra)

    (expected,) = torch.autograd.grad(by_hand(zs), zs)
    torch.testing.assert_close(grad, expected)


def naive_standardised_kd(zs: torch.Tensor, zt: torch.Tensor, T: float) -> float:
    """``T^2 KL(softmax(Z(zt)/T) || softmax(Z(zs)/T))`` sample by sample, Z with the sample standard deviation."""
    total = 0.0
    for s_row, t_row in zip(zs.tolist(), zt.tolist(), strict=True):
        def z(row: list[float]) -> list[float]:
            mean = sum(row) / len(row)
            std = math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1))
            return [(v - mean) / (std + 1e-7) for v in row]

        def softmax(row: list[float]) -> list[float]:
            e = [math.exp(v / T) for v in row]
            return [v / sum(e) for v in e]

        p, q = softmax(z(t_row)), softmax(z(s_row))
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True))
    return T**2 * total / len(zs)


@pytest.mark.parametrize(("batch", "classes", "temperature"), [(8, 10, 2.0), (5, 2, 1.0), (16, 100, 4.0)])
def test_standardised_kd_equals_the_formula_in_value_and_gradient(batch: int, classes: int,
                                                                 temperature: float) -> None:
    torch.manual_seed(batch)
    zs = (torch.randn(batch, classes, dtype=torch.float64) * 5 + 2).requires_grad_()
    zt = torch.randn(batch, classes, dtype=torch.float64) * 0.3
    y = torch.randint(0, classes, (batch,))
    out = standardised_kd_loss(zs, zt, y, kd_weight=9.0, temperature=temperature, ce_weight=0.1)
    assert float(out["kd"]) == pytest.approx(naive_standardised_kd(zs.detach(), zt, temperature), rel=1e-10)
    torch.testing.assert_close(out["loss"], 0.1 * F.cross_entropy(zs, y) + 9.0 * out["kd"])

    def by_hand(z: torch.Tensor) -> torch.Tensor:
        def standardised(x: torch.Tensor) -> torch.Tensor:
            centred = x - x.mean(1, keepdim=True)
            return centred / ((centred**2).sum(1, keepdim=True) / (classes - 1)).sqrt().add(1e-7)

        p = (standardised(zt) / temperature).softmax(1)
        log_q = (standardised(z) / temperature).log_softmax(1)
        kd = temperature**2 * (p * (p.log() - log_q)).sum(1).mean()
        return 0.1 * F.cross_entropy(z, y) + 9.0 * kd

    (grad,) = torch.autograd.grad(out["loss"], zs)
    (expected,) = torch.autograd.grad(by_hand(zs), zs)
    torch.testing.assert_close(grad, expected)


def test_neither_loss_sends_a_gradient_to_the_teacher() -> None:
    zs = torch.randn(6, 5, requires_grad=True)
    zt = torch.randn(6, 5, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    (dist_loss(zs, zt, y)["loss"] + standardised_kd_loss(zs, zt, y)["loss"]).backward()
    assert zt.grad is None and zs.grad is not None and bool(zs.grad.abs().sum() > 0)


@pytest.mark.parametrize(("task", "kwargs", "message"), [
    (DIST, {"inter_weight": -1.0}, "inter_weight must be finite and >= 0, got -1.0"),
    (DIST, {"intra_weight": math.nan}, "intra_weight must be finite and >= 0, got nan"),
    (DIST, {"temperature": 0.0}, "temperature must be finite and > 0, got 0.0"),
    (LogitStandardisedKD, {"kd_weight": math.inf}, "kd_weight must be finite and >= 0, got inf"),
    (LogitStandardisedKD, {"ce_weight": -0.1}, "ce_weight must be finite and >= 0, got -0.1"),
])
def test_bad_weights_are_refused_in_one_line(task: type, kwargs: dict, message: str) -> None:
    with pytest.raises(Refusal, match=message.replace("(", r"\(").replace(")", r"\)")):
        task(MLP(num_classes=10), SmallCNN(num_classes=10), **kwargs)


@pytest.mark.parametrize("task", [DIST, LogitStandardisedKD])
def test_each_task_trains_on_digits_and_logs_its_parts(task: type) -> None:
    torch.manual_seed(0)
    module = task(MLP(hidden_sizes=(32,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                  lr_scheduler="none")
    trainer = cpu_trainer(max_epochs=2, limit_train_batches=6, limit_val_batches=2)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=64))
    parts = {"train/ce_loss", "train/inter_loss", "train/intra_loss"} if task is DIST else {"train/ce_loss",
                                                                                           "train/kd_loss"}
    assert parts <= set(trainer.callback_metrics)
    assert all(math.isfinite(float(trainer.callback_metrics[key])) for key in parts)
    assert DIST.run_variant({}) == "inter2-intra2-T4" and LogitStandardisedKD.run_variant({}) == "kd9-ce0.1-T2"
