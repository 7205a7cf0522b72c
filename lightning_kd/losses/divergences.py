"""The terms losses are built from: divergences between a student's logits and soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import check_same_shape, check_temperature

__all__ = [
    "alpha_mix",
    "soft_cross_entropy",
    "soft_target_kl",
]


def alpha_mix(label_term: Tensor, distillation_term: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * label_term + alpha * distillation_term`` as one operation (``torch.lerp``), so one kernel
    and one backward node a step instead of three.

    Example:
        >>> import torch
        >>> ce, kd = torch.tensor(2.0), torch.tensor(6.0)
        >>> float(alpha_mix(ce, kd, 0.25)), 0.75 * 2.0 + 0.25 * 6.0
        (3.0, 3.0)
    """
    return torch.lerp(label_term, distillation_term, alpha)


@per_position
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
    check_same_shape(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    # 'batchmean' divides by B, as KL's definition asks; 'mean' would divide by B * C
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


@per_position
def soft_cross_entropy(student_logits: Tensor, target_probs: Tensor) -> Tensor:
    """``-(p * log_softmax(zs)).sum(1).mean()``: cross-entropy against a distribution ``p`` per sample.

    Example:
        >>> import torch
        >>> y = torch.tensor([2, 0])
        >>> z = torch.randn(2, 3)
        >>> bool(torch.isclose(soft_cross_entropy(z, F.one_hot(y, 3).float()), F.cross_entropy(z, y)))
        True
    """
    check_same_shape(student_logits, target_probs, what="target probabilities")
    return -(target_probs.detach() * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
