"""Variational information distillation, VID (Ahn et al. 2019): the student's features, through a learned regressor,
predict the teacher's as a Gaussian of learned per-channel variance.

For each matched stage the regressor (the task's projector: three 1x1 convolutions with ReLUs between, the student's
map average-pooled to the teacher's resolution first where larger) gives the mean ``mu``, and the variance is
``sigma_c^2 = softplus(alpha_c) + eps`` per teacher channel (``alpha`` learned, initialised so that
``sigma^2 = 5``, ``eps`` 1e-5). The term is the Gaussian's negative log-likelihood of the teacher's map ``t``
without its constant, ``1/2 ((mu - t)^2 / sigma_c^2 + log sigma_c^2)``:

* ``authors_code`` (default; ssahn0215/variational-information-distillation, which RepDistiller copies and ran for
  the published tables with weight 1): its mean over every element;
* ``paper`` (Eq. 2 and 6): summed over the channels and positions of a sample, averaged over the batch.

Summed over the stages; the total is ``ce_weight * CE + vid_weight * vid``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import check_feature_maps, label_term, pool_to_common_size
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_choice, check_weight

__all__ = [
    "VID_CONVENTIONS", "VID_DEFAULTS", "VIDConvention", "VIDLoss", "initial_raw_variance", "vid_loss", "vid_variance",
]

VIDConvention = Literal["authors_code", "paper"]
VID_CONVENTIONS: tuple[str, ...] = ("authors_code", "paper")
VID_DEFAULTS = {"vid_weight": 1.0, "initial_variance": 5.0}
"""RepDistiller's CIFAR-100 weight and the authors' initial variance."""

VID_EPS = 1e-5
"""The variance's floor (the authors' ``eps``)."""


def vid_variance(raw: Tensor) -> Tensor:
    """``softplus(raw) + eps``: a per-channel variance from its unconstrained parameter.

    Example:
        >>> import torch, math
        >>> round(float(vid_variance(torch.tensor([math.log(math.exp(5.0 - 1e-5) - 1)]))), 6)
        5.0
    """
    return F.softplus(raw) + VID_EPS


@full_precision
def vid_loss(
    student_logits: Tensor,
    targets: Tensor,
    means: list[Tensor],
    teacher_features: list[Tensor],
    variances: list[Tensor],
    vid_weight: float = VID_DEFAULTS["vid_weight"],
    ce_weight: float = 1.0,
    convention: VIDConvention = "authors_code",
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + vid_weight * sum_stages NLL(t | mu, sigma^2)`` (see the module for the two reductions).

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        means: The regressed means, one ``(B, C_t, H, W)`` per stage (the teacher's channels).
        teacher_features: The teacher's ``(B, C_t, H', W')`` maps (constants: detached here; pooled to the mean's
            resolution where larger).
        variances: ``(C_t,)`` variances per stage, ``> 0``.
        vid_weight: Weight of the VID term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        convention: ``authors_code`` (mean over elements) or ``paper`` (sum per sample, mean over the batch).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "vid"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> t = [torch.zeros(2, 3, 2, 2)]
        >>> out = vid_loss(torch.zeros(2, 4), torch.tensor([0, 1]), t, t, [torch.ones(3)])
        >>> float(out["vid"])  # a perfect mean, unit variance: 0
        0.0
    """
    if not (len(means) == len(teacher_features) == len(variances)) or not means:
        raise Refusal(f"VID matches stage to stage: got {len(means)} means, {len(teacher_features)} teacher maps "
                      f"and {len(variances)} variances")
    terms = []
    for mean, teacher, variance in zip(means, teacher_features, variances, strict=True):
        check_feature_maps("VID", mean, teacher)
        mean, teacher = pool_to_common_size(mean, teacher.detach())
        variance = variance.view(1, -1, 1, 1)
        nll = 0.5 * ((mean - teacher).pow(2) / variance + variance.log())
        terms.append(nll.mean() if convention == "authors_code" else nll.flatten(1).sum(dim=1).mean())
    vid = sum(terms[1:], terms[0])
    return label_term(student_logits, targets, ce_weight, label_smoothing, vid=(vid_weight, vid))


class VIDLoss(nn.Module):
    """Module form of :func:`vid_loss`, checking its arguments once.

    Example:
        >>> VIDLoss()
        VIDLoss(vid_weight=1.0, ce_weight=1.0, convention='authors_code')
    """

    def __init__(self, vid_weight: float = VID_DEFAULTS["vid_weight"], ce_weight: float = 1.0,
                 convention: VIDConvention = "authors_code", label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        check_weight(vid_weight, "vid_weight")
        check_weight(ce_weight, "ce_weight")
        check_choice("VID convention", convention, VID_CONVENTIONS)
        self.vid_weight, self.ce_weight, self.convention = vid_weight, ce_weight, convention
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, targets: Tensor, means: list[Tensor], teacher_features: list[Tensor],
                variances: list[Tensor]) -> LossOutput:
        return vid_loss(student_logits, targets, means, teacher_features, variances, self.vid_weight, self.ce_weight,
                        self.convention, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"vid_weight={self.vid_weight}, ce_weight={self.ce_weight}, convention={self.convention!r}"


def initial_raw_variance(variance: float) -> float:
    """The unconstrained parameter whose :func:`vid_variance` is ``variance`` (the authors' initialisation)."""
    return math.log(math.expm1(variance - VID_EPS))
