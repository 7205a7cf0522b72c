"""KD on standardised logits (Sun et al. 2024, "Logit Standardization in Knowledge Distillation").

Each sample's logits are z-scored before the temperature softmax of Hinton's KD, the teacher's and the
student's each with its own mean and standard deviation:

``Z(z) = (z - mean(z)) / (std(z) + 1e-7)``,
``L = ce_weight * CE(zs, y) + kd_weight * T^2 * KL(softmax(Z(zt) / T) || softmax(Z(zs) / T))``.

The student then matches the teacher's logit *relations* rather than their range: dividing by ``std(z) * T``
is the paper's per-sample temperature, weighted by the base temperature ``T``. As in the authors' code
(``mdistiller/distillers/KD.py`` of their repository), ``std`` is torch's (Bessel-corrected, over ``C - 1``)
and ``1e-7`` is added to it. Their CIFAR-100 command (``--logit-stand --base-temp 2 --kd-weight 9``, with
``CE_WEIGHT 0.1``) gives the defaults here: ``ce_weight`` 0.1, ``kd_weight`` 9, ``T`` 2. The two weights are
independent (not Hinton's ``alpha`` and ``1 - alpha``).
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import soft_target_kl
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_same_shape, check_temperature, check_weight

__all__ = ["LOGIT_STANDARDISATION_DEFAULTS", "StandardisedKDLoss", "standardise_logits", "standardised_kd_loss"]

LOGIT_STANDARDISATION_DEFAULTS = {"kd_weight": 9.0, "ce_weight": 0.1, "temperature": 2.0}
"""The authors' CIFAR-100 settings for KD with logit standardisation."""

EPS = 1e-7
"""Added to each sample's standard deviation (the authors' code), so constant logits stay finite."""


def standardise_logits(logits: Tensor) -> Tensor:
    """Each row's z-score: minus its mean, over its (Bessel-corrected) standard deviation plus ``1e-7``.

    Example:
        >>> import torch
        >>> standardise_logits(torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])).round(decimals=4)
        tensor([[-1.,  0.,  1.],
                [-1.,  0.,  1.]])
    """
    return (logits - logits.mean(dim=-1, keepdim=True)) / (logits.std(dim=-1, keepdim=True) + EPS)


@per_position
def standardised_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    kd_weight: float = LOGIT_STANDARDISATION_DEFAULTS["kd_weight"],
    temperature: float = LOGIT_STANDARDISATION_DEFAULTS["temperature"],
    ce_weight: float = LOGIT_STANDARDISATION_DEFAULTS["ce_weight"],
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE(zs, y) + kd_weight * T^2 * KL(softmax(Z(zt)/T) || softmax(Z(zs)/T))``.

    Args:
        student_logits: ``(B, C)`` student logits, ``C >= 2``.
        teacher_logits: ``(B, C)`` teacher logits (constants: detached here).
        targets: ``(B,)`` class indices.
        kd_weight: Weight of the distillation term, ``>= 0``.
        temperature: The base temperature ``T > 0`` (each sample's is ``T * std``).
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "kd"}``: the total and its parts, unweighted (``kd`` with ``T^2``).

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> out = standardised_kd_loss(zs, zt, y)
        >>> bool(torch.isclose(out["loss"], 0.1 * out["ce"] + 9 * out["kd"]))
        True
        >>> float(standardised_kd_loss(3 * zt + 5, zt, y)["kd"]) < 1e-5  # the range and shift do not matter
        True
    """
    check_same_shape(student_logits, teacher_logits)
    if student_logits.shape[-1] < 2:
        raise Refusal(f"logit standardisation needs at least 2 classes, got {student_logits.shape[-1]}")
    kd = soft_target_kl(standardise_logits(student_logits), standardise_logits(teacher_logits.detach()), temperature)
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    return {"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd}


class StandardisedKDLoss(nn.Module):
    """Module form of :func:`standardised_kd_loss`, checking every weight once.

    Example:
        >>> StandardisedKDLoss()
        StandardisedKDLoss(kd_weight=9.0, temperature=2.0, ce_weight=0.1)
    """

    def __init__(self, kd_weight: float = LOGIT_STANDARDISATION_DEFAULTS["kd_weight"],
                 temperature: float = LOGIT_STANDARDISATION_DEFAULTS["temperature"],
                 ce_weight: float = LOGIT_STANDARDISATION_DEFAULTS["ce_weight"],
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        check_weight(kd_weight, "kd_weight")
        check_weight(ce_weight, "ce_weight")
        check_temperature(temperature)
        self.kd_weight, self.temperature, self.ce_weight = kd_weight, temperature, ce_weight
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> LossOutput:
        return standardised_kd_loss(student_logits, teacher_logits, targets, self.kd_weight, self.temperature,
                                    self.ce_weight, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"kd_weight={self.kd_weight}, temperature={self.temperature}, ce_weight={self.ce_weight}"
