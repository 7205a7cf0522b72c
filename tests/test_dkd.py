"""Decoupled KD against a naive reference written from the paper's formula, and as a task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_kd import DecoupledKD
from lightning_kd.data import DigitsDataModule
from lightning_kd.errors import Refusal
from lightning_kd.losses import DKDLoss, dkd_loss, dkd_warmup
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import cpu_trainer


def naive_dkd(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, T: float) -> torch.Tensor:
    """Sample by sample, class by class, from the definitions: b = [p_t, 1 - p_t], p_hat over the other classes."""
    total = zs.new_zeros(())
    for i in range(len(y)):
        ps, pt = F.softmax(zs[i] / T, dim=0), F.softmax(zt[i] / T, dim=0).detach()
        t = int(y[i])
        bs, bt = [ps[t], 1 - ps[t]], [pt[t], 1 - pt[t]]
        tckd = sum(bt[k] * (torch.log(bt[k]) - torch.log(bs[k])) for k in range(2))
        others = [c for c in range(len(ps)) if c != t]
        qs = torch.stack([ps[c] for c in others]) / (1 - ps[t])
        qt = torch.stack([pt[c] for c in others]) / (1 - pt[t])
        nckd = sum(qt[k] * (torch.log(qt[k]) - torch.log(qs[k])) for k in range(len(others)))
        total = total + T**2 * (alpha * tckd + beta * nckd)
    return total / len(y)


@pytest.mark.parametrize(("batch", "classes", "alpha", "beta", "temperature"),
                         [(8, 10, 1.0, 8.0, 4.0), (5, 3, 0.5, 2.0, 1.0), (4, 2, 2.0, 0.0, 2.0),
                          (16, 100, 1.0, 8.0, 4.0)])
def test_the_loss_and_its_gradient_equal_the_formula(batch: int, classes: int, alpha: float, beta: float,
                                                     temperature: float) -> None:
    torch.manual_seed(batch)
    zs = (torch.randn(batch, classes, dtype=torch.float64) * 3).requires_grad_()
    zt = torch.randn(batch, classes, dtype=torch.float64) * 3
    y = torch.randint(0, classes, (batch,))
    out = dkd_loss(zs, zt, y, alpha, beta, temperature, ce_weight=0.0)
    expected = naive_dkd(zs, zt, y, alpha, beta, temperature)
    torch.testing.assert_close(out["loss"], expected)
    (grad,) = torch.autograd.grad(out["loss"], zs)
    (expected_grad,) = torch.autograd.grad(naive_dkd(zs, zt, y, alpha, beta, temperature), zs)
    torch.testing.assert_close(grad, expected_grad)
    # the parts: TCKD and NCKD alone, with T^2; CE plain
    torch.testing.assert_close(out["tckd"], naive_dkd(zs, zt, y, 1.0, 0.0, temperature))
    torch.testing.assert_close(out["nckd"], naive_dkd(zs, zt, y, 0.0, 1.0, temperature))
    torch.testing.assert_close(out["ce"], F.cross_entropy(zs, y))


def test_weights_warmup_and_ce_combine_as_stated() -> None:
    zs, zt, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    out = dkd_loss(zs, zt, y, tckd_weight=2.0, nckd_weight=3.0, ce_weight=0.5, warmup=0.25)
    torch.testing.assert_close(out["loss"], 0.5 * out["ce"] + 0.25 * (2.0 * out["tckd"] + 3.0 * out["nckd"]))


def test_no_gradient_reaches_the_teacher_and_identical_logits_cost_nothing() -> None:
    zs = torch.randn(4, 6, requires_grad=True)
    zt = zs.detach().clone().requires_grad_()
    out = dkd_loss(zs, zt, torch.tensor([0, 1, 2, 3]), ce_weight=0.0)
    out["loss"].backward()
    assert zt.grad is None
    assert float(out["loss"]) == pytest.approx(0.0, abs=1e-6)


def test_warmup_rises_linearly_over_the_first_epochs() -> None:
    assert [dkd_warmup(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert dkd_warmup(0, 0) == 1.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nckd_weight": -1.0}, "nckd_weight must be finite and >= 0, got -1.0"),
    ({"tckd_weight": math.nan}, "tckd_weight must be finite and >= 0, got nan"),
    ({"ce_weight": math.inf}, "ce_weight must be finite and >= 0, got inf"),
    ({"temperature": 0.0}, "temperature must be finite and > 0, got 0.0"),
    ({"warmup_epochs": -2}, "warmup_epochs must be an integer >= 0, got -2"),
])
def test_bad_weights_are_refused_in_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(Refusal, match=message.replace("(", r"\(").replace(")", r"\)")):
        DecoupledKD(MLP(num_classes=10), SmallCNN(num_classes=10), **kwargs)


def test_one_class_is_refused() -> None:
    with pytest.raises(Refusal, match="at least 2 classes"):
        DKDLoss()(torch.randn(3, 1), torch.randn(3, 1), torch.zeros(3, dtype=torch.long))


def test_the_task_warms_up_per_epoch_and_learns_on_digits() -> None:
    torch.manual_seed(0)
    task = DecoupledKD(MLP(hidden_sizes=(32,), num_classes=10), SmallCNN(widths=(8, 16), num_classes=10),
                       warmup_epochs=2, lr_scheduler="none")
    seen: list[float] = []
    original = task.criterion.forward

    def spy(*args, **kwargs):
        seen.append(args[3])
        return original(*args, **kwargs)

    task.criterion.forward = spy
    trainer = cpu_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=2)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=64))
    assert seen == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert {"train/ce_loss", "train/tckd_loss", "train/nckd_loss"} <= set(trainer.callback_metrics)
    assert DecoupledKD.run_variant({"nckd_weight": 2.0}) == "tckd1-nckd2-T4"
