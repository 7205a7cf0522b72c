"""Distillation losses as pure functions, with ``nn.Module`` forms beside them.

Conventions (see METHODS.md): ``student_logits`` and ``teacher_logits`` are ``(B, C)``; the teacher's
logits are treated as constants (detached here, whatever the caller did). ``alpha`` always weights the
*distillation* term and ``1 - alpha`` the label term (Hinton's convention; torchdistill's ``KDLoss``
uses the reverse).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def check_temperature(temperature: float) -> None:
    """Raise ``ValueError`` unless ``temperature > 0``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def check_alpha(alpha: float) -> None:
    """Raise ``ValueError`` unless ``0 <= alpha <= 1``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; do student and teacher predict the same number of classes?"
        )


def soft_target_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(softmax(zt / T) || softmax(zs / T))``, averaged over the batch.

    The ``T^2`` factor keeps the soft-target gradients on the scale of a label loss (Hinton et al.).

    Example:
        >>> import torch
        >>> z = torch.randn(4, 10)
        >>> float(soft_target_kl(z, z, temperature=4.0))
        0.0
    """
    check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    # 'batchmean' divides by B, as KL's definition asks; 'mean' would divide by B * C
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hinton_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Vanilla KD: ``(1 - alpha) * CE(zs, y) + alpha * T^2 * KL(softmax(zt/T) || softmax(zs/T))``.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (constants).
        targets: ``(B,)`` class indices.
        alpha: Weight of the distillation term; ``1 - alpha`` weights cross-entropy.
        temperature: Softmax temperature ``T > 0``.

    Returns:
        ``(total, ce, kd)``: the weighted loss and its two unweighted parts.

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> total, ce, kd = hinton_kd_loss(zs, zt, y, alpha=0.9, temperature=4.0)
        >>> bool(torch.isclose(total, 0.1 * ce + 0.9 * kd))
        True
    """
    check_alpha(alpha)
    ce = F.cross_entropy(student_logits, targets)
    kd = soft_target_kl(student_logits, teacher_logits, temperature)
    return (1 - alpha) * ce + alpha * kd, ce, kd


class HintonKDLoss(nn.Module):
    """Module form of :func:`hinton_kd_loss`, validating ``alpha`` and ``temperature`` once.

    Example:
        >>> import torch
        >>> loss = HintonKDLoss(alpha=0.5, temperature=2.0)
        >>> total, ce, kd = loss(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    def __init__(self, alpha: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__()
        check_alpha(alpha)
        check_temperature(temperature)
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return hinton_kd_loss(student_logits, teacher_logits, targets, self.alpha, self.temperature)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}"
