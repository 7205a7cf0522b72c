"""Decoupled Knowledge Distillation (Zhao et al. 2022): KD split into a target-class and a non-target-class term.

With ``p = softmax(z / T)`` and ``t`` the label, the binary distribution ``b = [p_t, 1 - p_t]`` carries the
target class and ``p_hat = softmax`` over the other classes (the target left out) the rest:

``L = ce_weight * CE(zs, y) + w * (tckd_weight * TCKD + nckd_weight * NCKD)``, with
``TCKD = T^2 * KL(b_teacher || b_student)`` and ``NCKD = T^2 * KL(p_hat_teacher || p_hat_student)``,

the two KL terms (TCKD and NCKD) averaged over the batch, ``w`` the warm-up factor (:func:`dkd_warmup`).
``tckd_weight``, ``nckd_weight`` and ``ce_weight`` are independent weights (none is ``1 -`` another). The non-target
distribution is computed over the other classes exactly (the authors' code subtracts 1000 from the
target's logit instead; the two agree unless logits are in the thousands).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_same_shape, check_temperature, check_weight

__all__ = ["DKDLoss", "DKD_DEFAULTS", "dkd_loss", "dkd_warmup"]

DKD_DEFAULTS = {"tckd_weight": 1.0, "nckd_weight": 8.0, "temperature": 4.0, "warmup_epochs": 20}
"""mdistiller's CIFAR-100 settings (``CFG.DKD``: ALPHA 1 and BETA 8, here tckd_weight and nckd_weight), T 4, a
20-epoch warm-up."""


def _target_and_others(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The target class's logit ``(B,)`` and the other classes' ``(B, C - 1)``, in class order."""
    is_target = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, targets.unsqueeze(1), True)
    return logits[is_target], logits[~is_target].view(len(logits), -1)


@per_position
def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    tckd_weight: float = 1.0,
    nckd_weight: float = 8.0,
    temperature: float = 4.0,
    ce_weight: float = 1.0,
    warmup: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """DKD: ``ce_weight * CE + warmup * (tckd_weight * TCKD + nckd_weight * NCKD)``, both KL terms times ``T^2``.

    Args:
        student_logits: ``(B, C)`` student logits, ``C >= 2``.
        teacher_logits: ``(B, C)`` teacher logits (constants: detached here).
        targets: ``(B,)`` class indices.
        tckd_weight: Weight of the target-class term TCKD, ``>= 0``.
        nckd_weight: Weight of the non-target-class term NCKD, ``>= 0``.
        temperature: Softmax temperature ``T > 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        warmup: Factor of the distillation terms (:func:`dkd_warmup`; 1 once warmed up).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "tckd", "nckd"}``: the total and its parts, unweighted (TCKD and NCKD with ``T^2``).

    Example:
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> out = dkd_loss(zs, zt, y, tckd_weight=1.0, nckd_weight=8.0, warmup=0.5)
        >>> bool(torch.isclose(out["loss"], out["ce"] + 0.5 * (out["tckd"] + 8.0 * out["nckd"])))
        True
    """
    check_same_shape(student_logits, teacher_logits)
    if student_logits.shape[1] < 2:
        raise Refusal(f"DKD needs at least 2 classes (a target and the others), got {student_logits.shape[1]}")
    teacher_logits = teacher_logits.detach()
    student_target, student_others = _target_and_others(student_logits / temperature, targets)
    teacher_target, teacher_others = _target_and_others(teacher_logits / temperature, targets)

    def binary_log_probs(target: Tensor, others: Tensor) -> Tensor:  # log [p_t, 1 - p_t], stably
        rest = others.logsumexp(dim=1)
        total = torch.logaddexp(target, rest)
        return torch.stack([target - total, rest - total], dim=1)

    def kl(log_p: Tensor, log_q: Tensor) -> Tensor:  # KL(p || q), averaged over the batch
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

    scale = temperature**2
    tckd = scale * kl(binary_log_probs(teacher_target, teacher_others),
                      binary_log_probs(student_target, student_others))
    nckd = scale * kl(teacher_others.log_softmax(dim=1), student_others.log_softmax(dim=1))
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    total = ce_weight * ce + warmup * (tckd_weight * tckd + nckd_weight * nckd)
    return {"loss": total, "ce": ce, "tckd": tckd, "nckd": nckd}


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """The distillation terms' factor in (0-based) ``epoch``: ``min((epoch + 1) / warmup_epochs, 1)``.

    The authors' code counts epochs from 1 and uses ``min(epoch / warmup, 1)``: the same factors, so the
    first epoch already distils at ``1 / warmup_epochs``. ``warmup_epochs = 0``: no warm-up.

    Example:
        >>> [dkd_warmup(epoch, 20) for epoch in (0, 9, 19, 30)], dkd_warmup(0, 0)
        ([0.05, 0.5, 1.0, 1.0], 1.0)
    """
    return 1.0 if warmup_epochs == 0 else min((epoch + 1) / warmup_epochs, 1.0)


class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss`, checking every weight once.

    Example:
        >>> loss = DKDLoss(tckd_weight=1.0, nckd_weight=8.0, temperature=4.0)
        >>> sorted(loss(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))
        ['ce', 'loss', 'nckd', 'tckd']
    """

    def __init__(self, tckd_weight: float = 1.0, nckd_weight: float = 8.0, temperature: float = 4.0,
                 ce_weight: float = 1.0, label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        for name, weight in (("tckd_weight", tckd_weight), ("nckd_weight", nckd_weight), ("ce_weight", ce_weight)):
            check_weight(weight, name)
        check_temperature(temperature)
        self.tckd_weight, self.nckd_weight = tckd_weight, nckd_weight
        self.temperature, self.ce_weight = temperature, ce_weight
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, warmup: float = 1.0
                ) -> LossOutput:
        return dkd_loss(student_logits, teacher_logits, targets, self.tckd_weight, self.nckd_weight, self.temperature,
                        self.ce_weight, warmup, self.label_smoothing)

    def extra_repr(self) -> str:
        return (f"tckd_weight={self.tckd_weight}, nckd_weight={self.nckd_weight}, temperature={self.temperature}, "
                f"ce_weight={self.ce_weight}")
