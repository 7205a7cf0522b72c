"""FSP, the flow of solution procedure (Yim et al. 2017): match the Gram matrices between consecutive layers.

For two consecutive tapped maps of one network, ``F1`` of ``(B, C1, H, W)`` and ``F2`` of ``(B, C2, H, W)`` (the
larger average-pooled to the smaller's resolution first), the FSP matrix of a sample is
``G[i, j] = sum_{h, w} F1[i, h, w] F2[j, h, w] / (H W)`` (``C1 x C2``). The student's matrices are pulled towards the
teacher's, which needs equal channel counts at every tapped layer (the resolutions may differ):

* ``benchmark_code`` (default; RepDistiller, the benchmark tables' code, as the paper's authors released none):
  the mean of the squared differences over the batch and the matrix, summed over the consecutive pairs;
* ``paper`` (Eq. 2, every ``lambda_i`` equal, folded into the weight): the squared Frobenius norm of the
  difference per sample, averaged over the batch, summed over the pairs (``C1 C2`` times the mean).

The paper uses the term alone, as a first stage that initialises the student (then trained on the labels): in this
package a run with ``ce_weight: 0``, whose checkpoint the second stage starts from through ``student_ckpt``. The total
is ``ce_weight * CE + fsp_weight * fsp``; RepDistiller's first stage sums the pairs' terms unweighted (weight 1; the
``-b 50`` of its run script weighs a term its second stage sets to zero, so no run used it).
"""

from __future__ import annotations

import itertools
from typing import Literal

from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, check_feature_maps, label_term, pool_to_common_size
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_choice

__all__ = ["FSP_CONVENTIONS", "FSP_DEFAULTS", "FSPConvention", "FSPLoss", "fsp_loss", "fsp_matrices"]

FSPConvention = Literal["benchmark_code", "paper"]
FSP_CONVENTIONS: tuple[str, ...] = ("benchmark_code", "paper")
FSP_DEFAULTS = {"fsp_weight": 1.0}
"""RepDistiller's first stage: the pairs' terms summed as they are."""


def fsp_matrices(features: list[Tensor]) -> list[Tensor]:
    """The ``(B, C_i, C_{i+1})`` FSP matrices between each two consecutive maps of one network.

    Example:
        >>> import torch
        >>> [tuple(g.shape) for g in fsp_matrices([torch.ones(2, 3, 8, 8), torch.ones(2, 5, 4, 4)])]
        [(2, 3, 5)]
        >>> float(fsp_matrices([torch.ones(1, 1, 2, 2), 2 * torch.ones(1, 1, 2, 2)])[0])
        2.0
    """
    matrices = []
    for bottom, top in itertools.pairwise(features):
        bottom, top = pool_to_common_size(bottom, top)
        matrices.append(bottom.flatten(2) @ top.flatten(2).transpose(1, 2) / bottom[0, 0].numel())
    return matrices


@full_precision
def fsp_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    fsp_weight: float = FSP_DEFAULTS["fsp_weight"],
    ce_weight: float = 1.0,
    convention: FSPConvention = "benchmark_code",
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + fsp_weight * sum_pairs d(G_s, G_t)`` over consecutive layers (see the module).

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's ``(B, C_i, H_i, W_i)`` maps, at least 2, in depth order.
        teacher_features: The teacher's maps at the same depths, with the same channel counts (constants: detached
            here).
        fsp_weight: Weight of the FSP term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        convention: ``benchmark_code`` (mean square) or ``paper`` (squared norm per sample).
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "fsp"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> maps = [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)]
        >>> float(fsp_loss(torch.zeros(2, 3), torch.tensor([0, 2]), maps, maps)["fsp"])
        0.0
    """
    if len(student_features) != len(teacher_features) or len(student_features) < 2:
        raise Refusal(f"FSP relates consecutive layers: it needs at least 2 of each network, as many of each; got "
                      f"{len(student_features)} of the student's and {len(teacher_features)} of the teacher's")
    for depth, (student, teacher) in enumerate(zip(student_features, teacher_features, strict=True)):
        check_feature_maps("FSP", student, teacher)
        if student.shape[1] != teacher.shape[1]:
            raise Refusal(f"FSP compares matrices of channels: the student's layer {depth + 1} has {student.shape[1]} "
                          f"channels and the teacher's {teacher.shape[1]}; tap layers of equal widths (a pair such "
                          "as resnet56 -> resnet20 or resnet32x4 -> resnet8x4)")
    terms = []
    teacher_matrices = fsp_matrices([t.detach() for t in teacher_features])
    for student, teacher in zip(fsp_matrices(student_features), teacher_matrices, strict=True):
        squares = (student - teacher).pow(2)
        terms.append(squares.mean() if convention == "benchmark_code" else squares.flatten(1).sum(dim=1).mean())
    fsp = sum(terms[1:], terms[0])
    return label_term(student_logits, targets, ce_weight, label_smoothing, fsp=(fsp_weight, fsp))


class FSPLoss(LayerPairsLoss):
    """Module form of :func:`fsp_loss`, checking its settings once.

    Example:
        >>> FSPLoss(convention="paper")
        FSPLoss(fsp_weight=1.0, ce_weight=1.0, convention='paper')
    """

    function = staticmethod(fsp_loss)

    def __init__(self, fsp_weight: float = FSP_DEFAULTS["fsp_weight"], ce_weight: float = 1.0,
                 convention: FSPConvention = "benchmark_code", label_smoothing: LabelSmoothing | None = None) -> None:
        check_choice("FSP convention", convention, FSP_CONVENTIONS)
        super().__init__(label_smoothing, fsp_weight=fsp_weight, ce_weight=ce_weight, convention=convention)
