"""Neuron selectivity transfer, NST (Huang & Wang 2017): match the distributions of the neurons' spatial patterns.

Each channel of a ``(B, C, H, W)`` map is a neuron whose ``H * W`` responses, L2-normalised, are one sample of the
layer's selectivity patterns; NST minimises their squared MMD with the polynomial kernel ``k(x, y) = (x . y)^2``
(``d = 2``, ``c = 0``, the paper's best), per image:

``MMD^2 = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') - 2 mean_{i,j} k(s_j, t_i)``,

averaged over the batch and summed over the matched stages (the larger map average-pooled to the smaller), weight 50
(RepDistiller's and mdistiller's CIFAR-100 setting). Paper (Eq. 7; the ``lambda / 2`` of Eq. 9 folded into the
weight) and the benchmark codebases agree. The channel counts may differ.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import (
    LayerPairsLoss,
    check_feature_maps,
    label_term,
    pool_to_common_size,
    summed_over_pairs,
)
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput

__all__ = ["NST_DEFAULTS", "NSTLoss", "nst_loss", "polynomial_mmd"]

NST_DEFAULTS = {"nst_weight": 50.0}
"""RepDistiller's and mdistiller's CIFAR-100 weight."""


def polynomial_mmd(student: Tensor, teacher: Tensor) -> Tensor:
    """The batch mean of the squared MMD between two ``(B, C, H, W)`` maps' L2-normalised channels, ``k = (x.y)^2``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 4, 3, 3)
        >>> float(polynomial_mmd(x, 5 * x)) < 1e-6  # the same patterns, scaled
        True
    """
    s = F.normalize(student.flatten(2), dim=2)
    t = F.normalize(teacher.flatten(2), dim=2)

    def kernel_mean(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2)).pow(2).mean()

    return kernel_mean(t, t) + kernel_mean(s, s) - 2 * kernel_mean(s, t)


@full_precision
def nst_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    nst_weight: float = NST_DEFAULTS["nst_weight"],
    ce_weight: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + nst_weight * sum_stages MMD^2`` (polynomial kernel; the teacher's side constant).

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's ``(B, C_i, H_i, W_i)`` maps, one per matched stage.
        teacher_features: The teacher's maps of the same stages (constants: detached here).
        nst_weight: Weight of the MMD term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "nst"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> maps = [torch.rand(2, 4, 4, 4)]
        >>> float(nst_loss(torch.randn(2, 3), torch.tensor([0, 2]), maps, maps)["nst"]) < 1e-6
        True
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        check_feature_maps("NST", student, teacher)
        return polynomial_mmd(*pool_to_common_size(student, teacher))

    nst = summed_over_pairs("NST", term, student_features, teacher_features)
    return label_term(student_logits, targets, ce_weight, label_smoothing, nst=(nst_weight, nst))


class NSTLoss(LayerPairsLoss):
    """Module form of :func:`nst_loss`, checking its weights once.

    Example:
        >>> NSTLoss()
        NSTLoss(nst_weight=50.0, ce_weight=1.0)
    """

    function = staticmethod(nst_loss)

    def __init__(self, nst_weight: float = NST_DEFAULTS["nst_weight"], ce_weight: float = 1.0,
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__(label_smoothing, nst_weight=nst_weight, ce_weight=ce_weight)
