"""Knowledge review, ReviewKD (Chen et al. 2021): the student's stages, fused deep to shallow, match the teacher's.

The fusion (attention-based fusion modules, trained with the student: :class:`~lightning_kd.tasks.ReviewKD`) gives
one map per teacher stage; the term is the *hierarchical context loss* summed over the stages:

``HCL(s, t) = (mse(s, t) + sum_k 2^-k mse(pool_{l_k}(s), pool_{l_k}(t))) / (1 + sum_k 2^-k)``

over the pyramid levels ``l_k`` of 4, 2 and 1 pixels a side smaller than the map (``pool`` an adaptive average
pooling, ``mse`` the mean square error), as the authors' code and mdistiller compute it. The total is
``ce_weight * CE + w(e) * review_weight * sum HCL``, the weight warmed up linearly over the first epochs
(:func:`review_warmup`; the two codes differ there only).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import check_feature_maps, label_term
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput

__all__ = ["REVIEW_CONVENTIONS", "REVIEW_DEFAULTS", "ReviewConvention", "hierarchical_context_loss", "review_kd_loss",
           "review_warmup"]

ReviewConvention = Literal["benchmark_code", "authors_code"]
REVIEW_CONVENTIONS: tuple[str, ...] = ("benchmark_code", "authors_code")
REVIEW_DEFAULTS = {"review_weight": 5.0, "warmup_epochs": 20}
"""mdistiller's CIFAR-100 weight (and the authors' for ResNet32x4 -> ResNet8x4 and WRN-40-2 -> WRN-16-2) and the
20-epoch warm-up of both."""

PYRAMID = (4, 2, 1)
"""The context levels' sizes, in pixels a side."""


def review_warmup(epoch: int, warmup_epochs: int, convention: ReviewConvention = "benchmark_code") -> float:
    """The term's weight factor in 0-based ``epoch``: ``min((epoch + 1) / warmup_epochs, 1)`` (``benchmark_code``,
    mdistiller's count from 1) or ``min(epoch / warmup_epochs, 1)`` (``authors_code``: no feature term in the first
    epoch); 1 when ``warmup_epochs`` is 0.

    Example:
        >>> review_warmup(0, 20), review_warmup(0, 20, "authors_code"), review_warmup(30, 20)
        (0.05, 0.0, 1.0)
    """
    if warmup_epochs <= 0:
        return 1.0
    counted = epoch + 1 if convention == "benchmark_code" else epoch
    return min(counted / warmup_epochs, 1.0)


@full_precision
def hierarchical_context_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """HCL of one stage: the mean square error at full resolution and at the pyramid's smaller levels, weighted
    ``1, 1/2, 1/4, ...`` and normalised by their sum (levels not smaller than the student's map are skipped).

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 8, 8)
        >>> float(hierarchical_context_loss(x, x))
        0.0
    """
    loss, weight, total = F.mse_loss(student, teacher), 1.0, 1.0
    for size in PYRAMID:
        if size >= student.shape[2]:
            continue
        weight /= 2
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size))
        total += weight
    return loss / total


@full_precision
def review_kd_loss(
    student_logits: Tensor,
    targets: Tensor,
    fused: list[Tensor],
    teacher_features: list[Tensor],
    review_weight: float = REVIEW_DEFAULTS["review_weight"],
    ce_weight: float = 1.0,
    warmup: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + warmup * review_weight * sum_stages HCL(fused_i, teacher_i)``.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        fused: The fusion's outputs, one ``(B, C_t, H_t, W_t)`` map per teacher stage.
        teacher_features: The teacher's maps (before their last ReLU; its pooled features as ``(B, C, 1, 1)``),
            constants: detached here.
        review_weight: Weight of the review term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        warmup: The warm-up factor of the review term, in ``[0, 1]`` (see :func:`review_warmup`).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "review"}``: the total and its parts, unweighted (the review part without the warm-up).

    Example:
        >>> import torch
        >>> maps = [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 1, 1)]
        >>> float(review_kd_loss(torch.zeros(2, 3), torch.tensor([0, 2]), maps, maps)["review"])
        0.0
    """
    if len(fused) != len(teacher_features) or not fused:
        raise Refusal(f"ReviewKD matches stage to stage: got {len(fused)} fused maps and {len(teacher_features)} of "
                      "the teacher's")
    terms = []
    for student, teacher in zip(fused, teacher_features, strict=True):
        check_feature_maps("ReviewKD", student, teacher)
        if student.shape[1:] != teacher.shape[1:]:
            raise Refusal(f"ReviewKD compares the fused map {tuple(student.shape[1:])} with the teacher's "
                          f"{tuple(teacher.shape[1:])}: they must have the same shape")
        terms.append(hierarchical_context_loss(student, teacher.detach()))
    review = sum(terms[1:], terms[0])
    return label_term(student_logits, targets, ce_weight, label_smoothing, review=(warmup * review_weight, review))
