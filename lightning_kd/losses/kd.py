"""Vanilla knowledge distillation (Hinton, Vinyals & Dean 2015)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.losses.divergences import alpha_mix, soft_target_kl
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_alpha, check_temperature

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TEMPERATURE",
    "HintonKDLoss",
    "hinton_kd_loss",
]

DEFAULT_ALPHA = 0.9
"""Hinton KD's usual weight of the distillation term."""
DEFAULT_TEMPERATURE = 4.0
"""Hinton KD's usual softmax temperature."""


@per_position
def hinton_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = DEFAULT_ALPHA,
    temperature: float = DEFAULT_TEMPERATURE,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """Vanilla KD: ``(1 - alpha) * CE(zs, y) + alpha * T^2 * KL(softmax(zt/T) || softmax(zs/T))``.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (constants).
        targets: ``(B,)`` class indices.
        alpha: Weight of the distillation term; ``1 - alpha`` weights cross-entropy.
        temperature: Softmax temperature ``T > 0``.
        label_smoothing: Smoothing of the label term ``CE`` (none by default).

    Returns:
        ``{"loss": total, "ce": ce, "kd": kd}``: the weighted loss and its two unweighted parts.

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> out = hinton_kd_loss(zs, zt, y, alpha=0.9, temperature=4.0)
        >>> bool(torch.isclose(out["loss"], 0.1 * out["ce"] + 0.9 * out["kd"]))
        True
    """
    check_alpha(alpha)
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    kd = soft_target_kl(student_logits, teacher_logits, temperature)
    return {"loss": alpha_mix(ce, kd, alpha), "ce": ce, "kd": kd}


class HintonKDLoss(nn.Module):
    """Module form of :func:`hinton_kd_loss`, validating ``alpha`` and ``temperature`` once.

    Example:
        >>> import torch
        >>> loss = HintonKDLoss(alpha=0.5, temperature=2.0)
        >>> sorted(loss(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])))
        ['ce', 'kd', 'loss']
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA, temperature: float = DEFAULT_TEMPERATURE,
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        check_alpha(alpha)
        check_temperature(temperature)
        self.alpha = alpha
        self.temperature = temperature
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> LossOutput:
        return hinton_kd_loss(student_logits, teacher_logits, targets, self.alpha, self.temperature,
                              self.label_smoothing)

    def extra_repr(self) -> str:
        smoothing = f", label_smoothing={self.label_smoothing!r}" if self.label_smoothing.eps else ""
        return f"alpha={self.alpha}, temperature={self.temperature}{smoothing}"
