"""Correlation congruence, CC (Peng et al. 2019): the student keeps the correlations between the batch's samples.

Both networks' features (the penultimate by default) are embedded by trained linear maps to ``dim`` 128 (the task's
projector), and compared in two conventions (``convention``):

* ``authors_code`` (default; the code the authors shared with RepDistiller, which ran the published CIFAR-100
  tables, weight 0.02): with ``d = |e_s - e_t|`` per sample, ``cc = mean_i sum_k d_{i,k} d_{i+1,k}`` over consecutive
  samples ``i, i+1`` of the batch;
* ``paper`` (Eq. 4-7): each network's correlation matrix ``C_ij = k(e_i, e_j)`` of the L2-normalised embeddings, with
  the Gaussian RBF ``k(x, y) = exp(-gamma ||x - y||^2)`` taken as its ``P``-order Taylor expansion
  ``sum_{p <= P} exp(-2 gamma) (2 gamma)^p / p! (x . y)^p`` (``gamma`` 0.4, ``P`` 2), and
  ``cc = ||C_t - C_s||^2 / B^2``.

The loss is ``ce_weight * CE + cc_weight * cc``. A statistic of the batch: under DDP, of each process's share.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, label_term, summed_over_pairs
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_choice, check_positive

__all__ = ["CC_CONVENTIONS", "CC_DEFAULTS", "CCConvention", "CorrelationCongruenceLoss", "correlation_congruence_loss",
           "taylor_rbf_correlation"]

CCConvention = Literal["authors_code", "paper"]
CC_CONVENTIONS: tuple[str, ...] = ("authors_code", "paper")
CC_DEFAULTS = {"cc_weight": 0.02, "dim": 128, "gamma": 0.4, "order": 2}
"""RepDistiller's CIFAR-100 weight and embedding width; the paper's kernel settings."""


def taylor_rbf_correlation(embeddings: Tensor, gamma: float, order: int) -> Tensor:
    """``(B, B)``: the Gaussian RBF between the L2-normalised rows, as its Taylor expansion to ``order``.

    Example:
        >>> import torch
        >>> x = torch.eye(3)
        >>> c = taylor_rbf_correlation(x, 0.4, 2)
        >>> round(float(c[0, 0]), 4), round(float(c[0, 1]), 4)  # exp(-0.8)(1 + 0.8 + 0.32), exp(-0.8)
        (0.9526, 0.4493)
    """
    unit = F.normalize(embeddings.flatten(1), dim=1)
    similarity = unit @ unit.t()
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * similarity**p for p in range(order + 1))


@full_precision
def correlation_congruence_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    cc_weight: float = CC_DEFAULTS["cc_weight"],
    ce_weight: float = 1.0,
    convention: CCConvention = "authors_code",
    gamma: float = CC_DEFAULTS["gamma"],
    order: int = CC_DEFAULTS["order"],
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + cc_weight * cc`` over the embedded features of each pair (see the module for ``cc``).

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's embeddings, one ``(B, D)`` per pair, ``B >= 2``.
        teacher_features: The teacher's embeddings (trained maps of constant features: not detached here, the
            teacher's embedding map learns; the teacher itself never receives a gradient).
        cc_weight: Weight of the correlation term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        convention: ``authors_code`` (consecutive samples' differences) or ``paper`` (Taylor-RBF correlations).
        gamma: The RBF's ``gamma`` (``paper``).
        order: The Taylor expansion's order ``P`` (``paper``).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "cc"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> e = [torch.randn(4, 8)]
        >>> float(correlation_congruence_loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), e, e)["cc"])
        0.0
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        if student.shape[0] < 2:
            raise Refusal("correlation congruence compares samples of a batch: it needs at least 2")
        if convention == "authors_code":
            difference = (student.flatten(1) - teacher.flatten(1)).abs()
            return (difference[:-1] * difference[1:]).sum(dim=1).mean()
        correlation_s = taylor_rbf_correlation(student, gamma, order)
        correlation_t = taylor_rbf_correlation(teacher, gamma, order)
        return (correlation_t - correlation_s).pow(2).mean()

    # the teacher's side is an embedding being trained: summed without detaching it
    cc = summed_over_pairs("correlation congruence", term, student_features, teacher_features, detach_teacher=False)
    return label_term(student_logits, targets, ce_weight, label_smoothing, cc=(cc_weight, cc))


class CorrelationCongruenceLoss(LayerPairsLoss):
    """Module form of :func:`correlation_congruence_loss`, checking its arguments once.

    Example:
        >>> CorrelationCongruenceLoss()
        CorrelationCongruenceLoss(cc_weight=0.02, ce_weight=1.0, convention='authors_code', gamma=0.4, order=2)
    """

    function = staticmethod(correlation_congruence_loss)

    def __init__(self, cc_weight: float = CC_DEFAULTS["cc_weight"], ce_weight: float = 1.0,
                 convention: CCConvention = "authors_code", gamma: float = CC_DEFAULTS["gamma"],
                 order: int = CC_DEFAULTS["order"], label_smoothing: LabelSmoothing | None = None) -> None:
        check_choice("correlation congruence convention", convention, CC_CONVENTIONS)
        check_positive(gamma, "gamma (the RBF kernel's)")
        if order < 0:
            raise Refusal(f"order (of the kernel's Taylor expansion) must be >= 0, got {order}")
        super().__init__(label_smoothing, cc_weight=cc_weight, ce_weight=ce_weight, convention=convention,
                         gamma=gamma, order=order)
