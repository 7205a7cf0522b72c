"""A comprehensive overhaul of feature distillation, OFD (Heo et al. 2019): the student's pre-ReLU features, through a
connector, match the teacher's pre-ReLU features by a partial L2 distance that ignores what the ReLU would erase.

Each teacher channel's values before its ReLU are modelled as Gaussian, with the mean and standard deviation of the
BatchNorm before it (its bias and the absolute value of its weight); the *margin* is the expectation of the
negative values, ``m - s phi(m / s) / Phi(-m / s)`` (``-3 s`` where ``Phi(-m / s) <= 0.001``, as the authors' code).
With the teacher's map ``t`` (average-pooled to the student's resolution) and the student's ``s``:

``d(s, t) = (s - max(t, margin))^2`` where ``s > max(t, margin)`` or ``t > 0``, else 0 (the teacher's negative
responses count only as "below the margin"),

summed over channels and positions, averaged over the batch, the stages weighted ``1 / 2^(n - 1 - i)`` (the
deepest 1). The total is ``ce_weight * CE + ofd_weight * sum``; the authors' CIFAR-100 code divides the sum by 1000
(weight 0.001, mdistiller's too).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import check_feature_maps, label_term
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput

__all__ = ["OFD_DEFAULTS", "ofd_loss", "ofd_margin", "partial_l2"]

OFD_DEFAULTS = {"ofd_weight": 1e-3}
"""The authors' CIFAR-100 code (the sum divided by 1000) and mdistiller's ``FEAT_WEIGHT``."""


def ofd_margin(weight: Tensor, bias: Tensor) -> Tensor:
    """``(C,)``: each channel's expected negative response before the ReLU, from the BatchNorm's affine parameters.

    Example:
        >>> import torch
        >>> [round(v, 4) for v in ofd_margin(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 10.0])).tolist()]
        [-0.7979, -6.0]
    """
    std, mean = weight.detach().double().abs(), bias.detach().double()
    below = torch.special.ndtr(-mean / std)
    density = torch.exp(-((mean / std) ** 2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(below > 0.001, mean - std * density / below.clamp_min(1e-300), -3 * std)
    return margin.to(weight.dtype)


def partial_l2(student: Tensor, teacher: Tensor, margin: Tensor) -> Tensor:
    """``sum_{c,h,w} d(s, t)`` averaged over the batch (see the module), the margin per teacher channel.

    Example:
        >>> import torch
        >>> s, t = torch.tensor([[[[-4.5]], [[1.0]]]]), torch.tensor([[[[-5.0]], [[2.0]]]])
        >>> float(partial_l2(s, t, torch.tensor([-4.0, -4.0])))  # channel 0: both under the margin, 0; channel 1: 1
        1.0
    """
    target = torch.maximum(teacher, margin.view(1, -1, 1, 1).to(teacher.dtype))
    counted = (student > target) | (target > 0)
    return ((student - target) ** 2 * counted).sum() / student.shape[0]


@full_precision
def ofd_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    margins: list[Tensor],
    ofd_weight: float = OFD_DEFAULTS["ofd_weight"],
    ce_weight: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + ofd_weight * sum_i partial_l2(s_i, pool(t_i), margin_i) / 2^(n - 1 - i)``.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The connectors' outputs, ``(B, C_t, H, W)`` per stage, shallow to deep.
        teacher_features: The teacher's pre-ReLU maps (constants: detached here; pooled to the student's size).
        margins: ``(C_t,)`` per stage (:func:`ofd_margin`).
        ofd_weight: Weight of the distillation term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "ofd"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> maps = [torch.randn(2, 3, 4, 4)]
        >>> float(ofd_loss(torch.zeros(2, 5), torch.tensor([0, 1]), maps, maps, [torch.full((3,), -1.0)])["ofd"])
        0.0
    """
    if not (len(student_features) == len(teacher_features) == len(margins)) or not margins:
        raise Refusal(f"OFD matches stage to stage: got {len(student_features)} student maps, {len(teacher_features)} "
                      f"teacher maps and {len(margins)} margins")
    count, terms = len(margins), []
    for index, (student, teacher, margin) in enumerate(zip(student_features, teacher_features, margins, strict=True)):
        check_feature_maps("OFD", student, teacher)
        teacher = F.adaptive_avg_pool2d(teacher.detach(), student.shape[2:])
        terms.append(partial_l2(student, teacher, margin) / 2 ** (count - 1 - index))
    ofd = sum(terms[1:], terms[0])
    return label_term(student_logits, targets, ce_weight, label_smoothing, ofd=(ofd_weight, ofd))
