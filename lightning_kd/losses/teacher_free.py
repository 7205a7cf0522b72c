"""Teacher-free KD (Yuan et al. 2020): Tf-KD reg, a hand-designed "virtual teacher" instead of a network.

The virtual teacher puts ``a`` on the true class and spreads ``1 - a`` evenly over the other ``C - 1``:
``p_d(k) = a if k == y else (1 - a) / (C - 1)``. The loss is

``L = (1 - alpha) * CE(zs, y) + alpha * reg``, in one of two modes:

* ``"paper"`` (Eq. 9 of the paper, read as KD is everywhere in this package):
  ``reg = tau^2 * KL(p_d^tau || softmax(zs / tau))`` with ``p_d^tau = softmax(log(p_d) / tau)``, the
  virtual teacher softened by the temperature exactly as a teacher's softmax is (its logits are
  ``log p_d``), averaged over the batch. The ``tau^2`` keeps the gradient on the label term's scale.
* ``"reference"`` (what the authors' released ``loss_kd_regularization`` computes):
  ``reg = multiplier * KLDivLoss()(log_softmax(zs), softmax(p_d / tau))``: the *probabilities*
  divided by ``tau`` and put through a softmax (a target within about ``1/tau`` of uniform), the
  student's logits not divided by ``tau``, no ``tau^2``, and ``nn.KLDivLoss``'s default ``'mean'``
  reduction, which divides by ``B * C`` rather than ``B``; ``multiplier`` (1 by default) rescales it.

The two targets differ in shape. For ``C = 10``, ``a = 0.99``, ``tau = 20``: the paper's keeps 0.135
on the true class and 0.096 on each other, the reference's 0.105 and 0.0995. With ``a = 1/C`` both are
uniform and Tf-KD reg is label smoothing towards uniform.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import alpha_mix
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_alpha, check_choice, check_temperature

__all__ = [
    "DEFAULT_REG_ALPHA",
    "DEFAULT_REG_TEMPERATURE",
    "DEFAULT_TRUE_CLASS_PROB",
    "TF_KD_REG_MODES",
    "TfKDRegLoss",
    "TfKDRegMode",
    "tf_kd_reg_loss",
    "virtual_teacher",
    "virtual_teacher_target",
]

TfKDRegMode = Literal["paper", "reference"]
"""Tf-KD reg as the paper writes it, or as the authors' code computes it."""
TF_KD_REG_MODES: tuple[str, ...] = get_args(TfKDRegMode)
DEFAULT_TRUE_CLASS_PROB = 0.99
"""The virtual teacher's probability ``a`` of the true class (the paper's choice; it asks for ``a >= 0.9``)."""
DEFAULT_REG_TEMPERATURE = 20.0
"""The paper's ``tau`` (it asks for ``tau >= 20``)."""
DEFAULT_REG_ALPHA = 0.1
"""Weight of the regulariser: our default (the paper tunes it per setting; configs set it)."""


def check_true_class_prob(true_class_prob: float) -> None:
    """Raise ``ValueError`` unless the virtual teacher's ``a`` is in ``(0, 1]``.

    Example:
        >>> check_true_class_prob(0.0)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: true_class_prob (the virtual teacher's a) must be in (0, 1], got 0.0
    """
    if not 0 < true_class_prob <= 1:
        raise Refusal(f"true_class_prob (the virtual teacher's a) must be in (0, 1], got {true_class_prob}")


def virtual_teacher(targets: Tensor, num_classes: int, true_class_prob: float = DEFAULT_TRUE_CLASS_PROB) -> Tensor:
    """The virtual teacher ``p_d``: ``a`` on each sample's true class, ``(1 - a) / (C - 1)`` on every other.

    Example:
        >>> virtual_teacher(torch.tensor([2]), 3, 0.8)
        tensor([[0.1000, 0.1000, 0.8000]])
    """
    check_true_class_prob(true_class_prob)
    if num_classes < 2:
        raise Refusal(f"the virtual teacher needs at least 2 classes, got {num_classes}")
    distribution = torch.full((len(targets), num_classes), (1 - true_class_prob) / (num_classes - 1),
                              device=targets.device)
    return distribution.scatter_(1, targets.unsqueeze(1), true_class_prob)


def virtual_teacher_target(
    targets: Tensor,
    num_classes: int,
    true_class_prob: float = DEFAULT_TRUE_CLASS_PROB,
    temperature: float = DEFAULT_REG_TEMPERATURE,
    mode: str = "paper",
) -> Tensor:
    """What the student is pulled towards: ``softmax(log(p_d) / tau)`` (paper) or ``softmax(p_d / tau)`` (reference).

    Example:
        >>> y = torch.tensor([0])
        >>> [round(float(virtual_teacher_target(y, 10, 0.99, 20.0, m)[0, 0]), 3) for m in ("paper", "reference")]
        [0.135, 0.105]
    """
    check_temperature(temperature)
    check_choice("Tf-KD reg mode", mode, TF_KD_REG_MODES)
    p_d = virtual_teacher(targets, num_classes, true_class_prob)
    # log(0) = -inf when a = 1: the softmax then keeps a one-hot target, as the limit should
    logits = torch.log(p_d) if mode == "paper" else p_d
    return F.softmax(logits / temperature, dim=1)


@per_position
def tf_kd_reg_loss(
    student_logits: Tensor,
    targets: Tensor,
    true_class_prob: float = DEFAULT_TRUE_CLASS_PROB,
    temperature: float = DEFAULT_REG_TEMPERATURE,
    alpha: float = DEFAULT_REG_ALPHA,
    mode: str = "paper",
    multiplier: float | None = None,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """Tf-KD reg: ``(1 - alpha) * CE(zs, y) + alpha * reg`` against the virtual teacher (see the module).

    Args:
        student_logits: ``(B, C)`` logits.
        targets: ``(B,)`` class indices.
        true_class_prob: The virtual teacher's ``a``, in ``(0, 1]``.
        temperature: ``tau > 0``.
        alpha: Weight of the regulariser, in ``[0, 1]``.
        mode: ``"paper"`` or ``"reference"``.
        multiplier: ``"reference"`` only: the code's factor on the ``'mean'``-reduced KL (default 1).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss": total, "ce": ce, "reg": reg}``, the parts unweighted.

    Example:
        >>> zs, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> out = tf_kd_reg_loss(zs, y, alpha=0.3)
        >>> bool(torch.isclose(out["loss"], 0.7 * out["ce"] + 0.3 * out["reg"]))
        True
    """
    check_alpha(alpha)
    multiplier = _check_multiplier(mode, multiplier)
    target = virtual_teacher_target(targets, student_logits.shape[1], true_class_prob, temperature, mode)
    target = target.to(student_logits.dtype)
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    if mode == "paper":
        # 'batchmean' divides by B, as KL's definition asks; the probability target (not log) makes
        # zero entries (a = 1) contribute 0 rather than NaN
        log_q = F.log_softmax(student_logits / temperature, dim=1)
        reg = F.kl_div(log_q, target, reduction="batchmean") * temperature**2
    else:
        # exactly the authors' nn.KLDivLoss() on unscaled logits: its default reduction 'mean' divides by B * C
        reg = F.kl_div(F.log_softmax(student_logits, dim=1), target, reduction="sum") / target.numel() * multiplier
    return {"loss": alpha_mix(ce, reg, alpha), "ce": ce, "reg": reg}


def _check_multiplier(mode: str, multiplier: float | None) -> float:
    check_choice("Tf-KD reg mode", mode, TF_KD_REG_MODES)
    if multiplier is None:
        return 1.0
    if mode != "reference":
        raise Refusal("multiplier applies to mode='reference' only (the authors' code); the paper's "
                         "mode has no multiplier")
    if not (math.isfinite(multiplier) and multiplier > 0):
        raise Refusal(f"multiplier must be finite and > 0, got {multiplier}")
    return multiplier


class TfKDRegLoss(nn.Module):
    """Module form of :func:`tf_kd_reg_loss`, its arguments checked once.

    Example:
        >>> loss = TfKDRegLoss(mode="reference", multiplier=10.0)
        >>> sorted(loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))
        ['ce', 'loss', 'reg']
        >>> TfKDRegLoss(temperature=0.0)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: temperature must be finite and > 0, got 0.0
    """

    def __init__(
        self,
        true_class_prob: float = DEFAULT_TRUE_CLASS_PROB,
        temperature: float = DEFAULT_REG_TEMPERATURE,
        alpha: float = DEFAULT_REG_ALPHA,
        mode: TfKDRegMode = "paper",
        multiplier: float | None = None,
        label_smoothing: LabelSmoothing | None = None,
    ) -> None:
        super().__init__()
        check_true_class_prob(true_class_prob)
        check_temperature(temperature)
        check_alpha(alpha)
        self.multiplier = _check_multiplier(mode, multiplier)
        self.true_class_prob, self.temperature, self.alpha, self.mode = true_class_prob, temperature, alpha, mode
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, targets: Tensor) -> LossOutput:
        return tf_kd_reg_loss(student_logits, targets, self.true_class_prob, self.temperature, self.alpha,
                              self.mode, self.multiplier if self.mode == "reference" else None, self.label_smoothing)

    def extra_repr(self) -> str:
        extra = f", multiplier={self.multiplier}" if self.mode == "reference" else ""
        return (f"mode={self.mode!r}, true_class_prob={self.true_class_prob}, temperature={self.temperature}, "
                f"alpha={self.alpha}{extra}")
