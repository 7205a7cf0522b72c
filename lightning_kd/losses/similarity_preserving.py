"""Similarity-preserving KD, SP (Tung & Mori 2019): the student keeps the teacher's pairwise similarities in a batch.

Each sample's features are flattened; ``G = F F^T`` (``B x B``) is row-normalised (each row to unit L2 norm), and
``sp = sum_layers ||G_t - G_s||_F^2 / B^2``. Only similarities between samples are compared, so the two networks'
widths and resolutions may differ. The loss is ``ce_weight * CE + sp_weight * sp``, weight 3000 on the last stage
in RepDistiller's and mdistiller's CIFAR-100 runs. Paper (Eq. 2-4) and authors' code agree. A statistic of the
batch: under DDP, of each process's share.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, label_term, summed_over_pairs
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput

__all__ = ["SP_DEFAULTS", "SimilarityPreservingLoss", "batch_similarity", "similarity_preserving_loss"]

SP_DEFAULTS = {"sp_weight": 3000.0}
"""RepDistiller's and mdistiller's CIFAR-100 weight."""


def batch_similarity(features: Tensor) -> Tensor:
    """The ``(B, B)`` similarities of a batch's flattened features, each row L2-normalised.

    Example:
        >>> import torch
        >>> g = batch_similarity(torch.randn(4, 3, 2, 2))
        >>> tuple(g.shape), [round(float(v), 4) for v in g.norm(dim=1)]
        ((4, 4), [1.0, 1.0, 1.0, 1.0])
    """
    flat = features.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


@full_precision
def similarity_preserving_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    sp_weight: float = SP_DEFAULTS["sp_weight"],
    ce_weight: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + sp_weight * sum_layers ||G_t - G_s||_F^2 / B^2``.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's features of each matched layer (any shape after the batch).
        teacher_features: The teacher's of the same layers (constants: detached here).
        sp_weight: Weight of the similarity term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "sp"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> features = [torch.randn(4, 8)]
        >>> out = similarity_preserving_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), features,
        ...                                  [2 * f for f in features])
        >>> float(out["sp"]) < 1e-12  # the same similarities, at another scale
        True
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        return (batch_similarity(teacher) - batch_similarity(student)).pow(2).sum() / student.shape[0] ** 2

    sp = summed_over_pairs("similarity-preserving KD", term, student_features, teacher_features)
    return label_term(student_logits, targets, ce_weight, label_smoothing, sp=(sp_weight, sp))


class SimilarityPreservingLoss(LayerPairsLoss):
    """Module form of :func:`similarity_preserving_loss`, checking its weights once.

    Example:
        >>> SimilarityPreservingLoss()
        SimilarityPreservingLoss(sp_weight=3000.0, ce_weight=1.0)
    """

    function = staticmethod(similarity_preserving_loss)

    def __init__(self, sp_weight: float = SP_DEFAULTS["sp_weight"], ce_weight: float = 1.0,
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__(label_smoothing, sp_weight=sp_weight, ce_weight=ce_weight)
