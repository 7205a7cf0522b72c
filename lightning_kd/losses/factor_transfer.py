"""Factor transfer, FT (Kim et al. 2018): the student's translated features match the teacher's paraphrased ones.

A *paraphraser* (a convolutional autoencoder on the teacher's last stage, its code ``k = 0.5`` times as wide) is
trained first to reconstruct the teacher's map (:func:`paraphraser_reconstruction_loss`, the mean square error);
frozen, its encoder gives the teacher's *factor*. A *translator* (three convolutions on the student's last stage, to
the factor's width) gives the student's. The term compares the two, the larger map average-pooled to the smaller:

* ``benchmark_code`` (default; RepDistiller, which ran the published CIFAR-100 tables with weight 200): each factor
  reduced to the channels' mean of its squares, flattened and L2-normalised, then the mean absolute difference;
* ``paper`` (Eq. 3, ``p = 1``): the whole factor flattened and L2-normalised, the L1 norm of the difference per
  sample, averaged over the batch.

The total is ``ce_weight * CE + ft_weight * ft``.
"""

from __future__ import annotations

from typing import Literal

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
from lightning_kd.losses.validation import LossOutput, check_choice

__all__ = [
    "FT_CONVENTIONS", "FT_DEFAULTS", "FTConvention", "FactorTransferLoss", "factor_transfer_loss",
    "normalised_factor", "paraphraser_reconstruction_loss",
]

FTConvention = Literal["benchmark_code", "paper"]
FT_CONVENTIONS: tuple[str, ...] = ("benchmark_code", "paper")
FT_DEFAULTS = {"ft_weight": 200.0}
"""RepDistiller's CIFAR-100 weight."""


def normalised_factor(factor: Tensor, convention: FTConvention = "benchmark_code") -> Tensor:
    """``(B, D)``: a ``(B, C, H, W)`` factor flattened and L2-normalised per sample (``benchmark_code``: its channels'
    mean of squares first, ``D = H W``; ``paper``: as it is, ``D = C H W``).

    Example:
        >>> import torch
        >>> normalised_factor(torch.ones(2, 3, 2, 2)).shape, normalised_factor(torch.ones(2, 3, 2, 2), "paper").shape
        (torch.Size([2, 4]), torch.Size([2, 12]))
    """
    reduced = factor.pow(2).mean(dim=1) if convention == "benchmark_code" else factor
    return F.normalize(reduced.flatten(1), dim=1)


@full_precision
def factor_transfer_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_factors: list[Tensor],
    teacher_factors: list[Tensor],
    ft_weight: float = FT_DEFAULTS["ft_weight"],
    ce_weight: float = 1.0,
    convention: FTConvention = "benchmark_code",
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + ft_weight * sum d(factor_s, factor_t)`` (see the module for the two conventions).

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_factors: The translator's ``(B, K, H, W)`` outputs, one per matched layer (FT uses one).
        teacher_factors: The paraphraser's codes of the teacher's maps, of the same width ``K`` (constants:
            detached here).
        ft_weight: Weight of the factor term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        convention: ``benchmark_code`` or ``paper``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "ft"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> factor = [torch.rand(2, 4, 4, 4)]
        >>> float(factor_transfer_loss(torch.zeros(2, 3), torch.tensor([0, 2]), factor, [3 * factor[0]])["ft"]) < 1e-7
        True
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        check_feature_maps("factor transfer", student, teacher)
        student, teacher = pool_to_common_size(student, teacher)
        difference = (normalised_factor(student, convention) - normalised_factor(teacher, convention)).abs()
        return difference.mean() if convention == "benchmark_code" else difference.sum(dim=1).mean()

    ft = summed_over_pairs("factor transfer", term, student_factors, teacher_factors)
    return label_term(student_logits, targets, ce_weight, label_smoothing, ft=(ft_weight, ft))


@full_precision
def paraphraser_reconstruction_loss(reconstruction: Tensor, teacher_features: Tensor) -> Tensor:
    """The paraphraser's training loss: the mean square error of its reconstruction of the teacher's map.

    Example:
        >>> import torch
        >>> float(paraphraser_reconstruction_loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)))
        1.0
    """
    return F.mse_loss(reconstruction, teacher_features.detach())


class FactorTransferLoss(LayerPairsLoss):
    """Module form of :func:`factor_transfer_loss`, checking its settings once.

    Example:
        >>> FactorTransferLoss()
        FactorTransferLoss(ft_weight=200.0, ce_weight=1.0, convention='benchmark_code')
    """

    function = staticmethod(factor_transfer_loss)

    def __init__(self, ft_weight: float = FT_DEFAULTS["ft_weight"], ce_weight: float = 1.0,
                 convention: FTConvention = "benchmark_code", label_smoothing: LabelSmoothing | None = None) -> None:
        check_choice("factor transfer convention", convention, FT_CONVENTIONS)
        super().__init__(label_smoothing, ft_weight=ft_weight, ce_weight=ce_weight, convention=convention)
