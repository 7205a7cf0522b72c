"""FitNets hints (Romero et al. 2015): the student's guided layer, through a regressor, regresses the teacher's hint.

``hint = sum_pairs d(r(v_s), u_t)`` over the matched (guided, hint) layers, ``r`` a learned regressor (the task's
projector) and ``d`` by ``convention``:

* ``benchmark_code`` (default; RepDistiller's and mdistiller's ``FitNet``, the published CIFAR-100 tables): the
  mean squared error over every element, ``F.mse_loss``; the total ``ce_weight * CE + hint_weight * hint``,
  weight 100, trained in one stage with the labels.
* ``paper`` (Eq. 3): ``1/2 ||u_t - r(v_s)||^2`` summed over a sample's elements and averaged over the batch. The
  paper trains in two stages: the hints alone first (``ce_weight: 0``, which leaves the layers after the guided one
  untouched), then KD from those weights (``student_ckpt``).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, label_term, summed_over_pairs
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_choice

__all__ = ["FITNETS_CONVENTIONS", "FITNETS_DEFAULTS", "FitNetsConvention", "HintLoss", "hint_loss"]

FitNetsConvention = Literal["benchmark_code", "paper"]
FITNETS_CONVENTIONS: tuple[str, ...] = ("benchmark_code", "paper")
FITNETS_DEFAULTS = {"hint_weight": 100.0}
"""RepDistiller's and mdistiller's CIFAR-100 weight."""


@full_precision
def hint_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    hint_weight: float = FITNETS_DEFAULTS["hint_weight"],
    ce_weight: float = 1.0,
    convention: FitNetsConvention = "benchmark_code",
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + hint_weight * hint``, ``hint`` the regression error of the regressed features.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The regressed student features of each pair, the shape of the teacher's.
        teacher_features: The teacher's hints (constants: detached here).
        hint_weight: Weight of the hint term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (0: the paper's first stage).
        convention: ``benchmark_code`` (mean squared error) or ``paper`` (half the squared norm per sample).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "hint"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> s, t = [torch.zeros(2, 3, 2, 2)], [torch.ones(2, 3, 2, 2)]
        >>> y, z = torch.tensor([0, 1]), torch.zeros(2, 2)
        >>> float(hint_loss(z, y, s, t)["hint"]), float(hint_loss(z, y, s, t, convention="paper")["hint"])
        (1.0, 6.0)
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"hint regression needs the regressed student features {tuple(student.shape)} in the "
                             f"teacher's shape {tuple(teacher.shape)}")
        if convention == "benchmark_code":
            return F.mse_loss(student, teacher)
        return 0.5 * (student - teacher).pow(2).flatten(1).sum(dim=1).mean()

    hint = summed_over_pairs("FitNets", term, student_features, teacher_features)
    return label_term(student_logits, targets, ce_weight, label_smoothing, hint=(hint_weight, hint))


class HintLoss(LayerPairsLoss):
    """Module form of :func:`hint_loss`, checking its arguments once.

    Example:
        >>> HintLoss()
        HintLoss(hint_weight=100.0, ce_weight=1.0, convention='benchmark_code')
    """

    function = staticmethod(hint_loss)

    def __init__(self, hint_weight: float = FITNETS_DEFAULTS["hint_weight"], ce_weight: float = 1.0,
                 convention: FitNetsConvention = "benchmark_code", label_smoothing: LabelSmoothing | None = None
                 ) -> None:
        check_choice("FitNets convention", convention, FITNETS_CONVENTIONS)
        super().__init__(label_smoothing, hint_weight=hint_weight, ce_weight=ce_weight, convention=convention)
