"""Attention transfer, AT (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention").

A feature map ``A`` (``B x C x H x W``) gives a spatial attention map ``Q = mean_c A_c^p`` (``B x HW``),
L2-normalised per sample. The student's maps are matched to the teacher's at every tapped stage; where their
resolutions differ the larger map is average-pooled to the smaller (the benchmark codebases' rule), and the channel
counts may differ freely.

Two conventions (``convention``):

* ``authors_code`` (default; szagoruyko/attention-transfer's ``at_loss``, as RepDistiller and mdistiller run it for
  the benchmark tables): ``at = sum_stages mean_{b, hw} (q_s - q_t)^2``, the total ``at_weight * at``, weight 1000.
* ``paper`` (Eq. 2): ``at = sum_stages mean_b || q_s - q_t ||_2``, the norm itself rather than its mean square, and
  the total ``at_weight / 2 * at``.
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
from lightning_kd.losses.validation import LossOutput, check_choice, check_positive

__all__ = ["AT_CONVENTIONS", "AT_DEFAULTS", "ATConvention", "AttentionTransferLoss", "attention_map",
           "attention_transfer_loss"]

ATConvention = Literal["authors_code", "paper"]
AT_CONVENTIONS: tuple[str, ...] = ("authors_code", "paper")
AT_DEFAULTS = {"at_weight": 1000.0, "p": 2.0}
"""RepDistiller's and mdistiller's CIFAR-100 settings: weight 1000, ``p = 2``."""


def attention_map(features: Tensor, p: float = 2.0) -> Tensor:
    """``(B, C, H, W)`` features to ``(B, H * W)`` attention: ``mean_c A_c^p``, L2-normalised per sample.

    Example:
        >>> import torch
        >>> q = attention_map(torch.rand(2, 4, 3, 3))
        >>> tuple(q.shape), [round(float(v), 4) for v in q.norm(dim=1)]
        ((2, 9), [1.0, 1.0])
    """
    return F.normalize(features.pow(p).mean(dim=1).flatten(1), dim=1)


@full_precision
def attention_transfer_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    at_weight: float = AT_DEFAULTS["at_weight"],
    p: float = AT_DEFAULTS["p"],
    ce_weight: float = 1.0,
    convention: ATConvention = "authors_code",
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + at_weight * at`` (``paper``: ``at_weight / 2 * at``), ``at`` summed over the stages.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's ``(B, C_i, H_i, W_i)`` maps, one per matched stage.
        teacher_features: The teacher's maps of the same stages (constants: detached here).
        at_weight: Weight of the attention term, ``>= 0``.
        p: Exponent of the activations in the attention map, ``> 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        convention: ``authors_code`` (mean squared difference) or ``paper`` (the norm of the difference, halved).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "at"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> maps = [torch.rand(4, 8, 4, 4)]
        >>> out = attention_transfer_loss(torch.randn(4, 10), torch.arange(4), maps, [3 * m for m in maps])
        >>> float(out["at"]) < 1e-12  # the same attention, at another scale
        True
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        check_feature_maps("attention transfer", student, teacher)
        student, teacher = pool_to_common_size(student, teacher)
        difference = attention_map(student, p) - attention_map(teacher, p)
        return difference.pow(2).mean() if convention == "authors_code" else difference.norm(dim=1).mean()

    at = summed_over_pairs("attention transfer", term, student_features, teacher_features)
    scale = at_weight if convention == "authors_code" else at_weight / 2
    return label_term(student_logits, targets, ce_weight, label_smoothing, at=(scale, at))


class AttentionTransferLoss(LayerPairsLoss):
    """Module form of :func:`attention_transfer_loss`, checking its arguments once.

    Example:
        >>> AttentionTransferLoss()
        AttentionTransferLoss(at_weight=1000.0, p=2.0, ce_weight=1.0, convention='authors_code')
    """

    function = staticmethod(attention_transfer_loss)

    def __init__(self, at_weight: float = AT_DEFAULTS["at_weight"], p: float = AT_DEFAULTS["p"],
                 ce_weight: float = 1.0, convention: ATConvention = "authors_code",
                 label_smoothing: LabelSmoothing | None = None) -> None:
        check_positive(p, "p (the attention map's exponent)")
        check_choice("attention transfer convention", convention, AT_CONVENTIONS)
        super().__init__(label_smoothing, at_weight=at_weight, p=p, ce_weight=ce_weight, convention=convention)
