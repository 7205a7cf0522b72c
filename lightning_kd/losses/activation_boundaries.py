"""Activation boundaries, AB (Heo et al. 2019): the student's pre-ReLU responses, through a connector, fall on the
same side of zero as the teacher's, by a margin.

For the teacher's pre-ReLU map ``t`` and the student's connected one ``s``, the *alternative L2* of the paper (its
Eq. 6, margin ``mu``, 1 by default) counts a student response only where it is on the wrong side of the margin:

``a(s, t) = sum (s + mu)^2 [s > -mu and t <= 0] + (s - mu)^2 [s <= mu and t > 0]``,

summed over channels and positions. As the authors' code (bhheo/AB_distillation, copied by RepDistiller), the
stages are weighted ``2^(i - n + 1)`` (the deepest 1, each shallower one half), and the sum is divided by the batch
size and scaled by ``3 / 1000``. AB initialises the student with this term alone (``ce_weight: 0``), then trains it
on the labels from there (``Classifier`` with ``net_ckpt``): ``ce_weight * CE + ab_weight * ab``.
"""

from __future__ import annotations

from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, check_feature_maps, label_term
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_positive

__all__ = ["AB_DEFAULTS", "AB_SCALE", "ActivationBoundariesLoss", "ab_loss", "alternative_l2"]

AB_DEFAULTS = {"ab_weight": 1.0, "margin": 1.0}
"""RepDistiller's weight (``-b 1``) and the authors' margin."""

AB_SCALE = 3 / 1000
"""The authors' code's scale of each stage's sum per sample."""


def alternative_l2(student: Tensor, teacher: Tensor, margin: float = AB_DEFAULTS["margin"]) -> Tensor:
    """``a(s, t)`` summed over every element (see the module).

    Example:
        >>> import torch
        >>> s, t = torch.tensor([0.5, -2.0, 2.0]), torch.tensor([-1.0, 1.0, 3.0])
        >>> float(alternative_l2(s, t))  # (0.5 + 1)^2 wrong side of -1; (-2 - 1)^2 below 1; 2 > 1 fine
        11.25
    """
    wrong_negative = (student > -margin) & (teacher <= 0)
    wrong_positive = (student <= margin) & (teacher > 0)
    return ((student + margin) ** 2 * wrong_negative + (student - margin) ** 2 * wrong_positive).sum()


@full_precision
def ab_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    ab_weight: float = AB_DEFAULTS["ab_weight"],
    ce_weight: float = 1.0,
    margin: float = AB_DEFAULTS["margin"],
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + ab_weight * sum_i 2^(i - n + 1) a(s_i, t_i) * 3 / (1000 B)``.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The connectors' outputs, ``(B, C_t, H_t, W_t)`` per stage, shallow to deep.
        teacher_features: The teacher's pre-ReLU maps of the same shapes (constants: detached here).
        ab_weight: Weight of the boundary term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (0 for AB's initialisation).
        margin: The margin ``mu``, ``> 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "ab"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> t = [torch.randn(2, 3, 4, 4)]
        >>> float(ab_loss(torch.zeros(2, 5), torch.tensor([0, 1]), [2 * t[0].sign()], t)["ab"])
        0.0
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise Refusal(f"AB matches stage to stage: got {len(student_features)} student and {len(teacher_features)} "
                      "teacher maps")
    count, terms = len(student_features), []
    for index, (student, teacher) in enumerate(zip(student_features, teacher_features, strict=True)):
        check_feature_maps("activation boundaries", student, teacher)
        if student.shape != teacher.shape:
            raise Refusal(f"activation boundaries compares the connected map {tuple(student.shape[1:])} with the "
                          f"teacher's {tuple(teacher.shape[1:])}: they must have the same shape")
        terms.append(2.0 ** (index - count + 1) * alternative_l2(student, teacher.detach(), margin)
                     / student.shape[0] * AB_SCALE)
    ab = sum(terms[1:], terms[0])
    return label_term(student_logits, targets, ce_weight, label_smoothing, ab=(ab_weight, ab))


class ActivationBoundariesLoss(LayerPairsLoss):
    """Module form of :func:`ab_loss`, checking its settings once.

    Example:
        >>> ActivationBoundariesLoss(ce_weight=0.0)
        ActivationBoundariesLoss(ab_weight=1.0, ce_weight=0.0, margin=1.0)
    """

    function = staticmethod(ab_loss)

    def __init__(self, ab_weight: float = AB_DEFAULTS["ab_weight"], ce_weight: float = 1.0,
                 margin: float = AB_DEFAULTS["margin"], label_smoothing: LabelSmoothing | None = None) -> None:
        check_positive(margin, "margin")
        super().__init__(label_smoothing, ab_weight=ab_weight, ce_weight=ce_weight, margin=margin)
