"""Relational knowledge distillation, RKD (Park et al. 2019): distances and angles between a batch's embeddings.

On the flattened features ``e`` of each matched layer (the penultimate by default):

* **distance**: the pairwise Euclidean distances, each network's divided by its mean over the distinct pairs, matched
  with the Huber (smooth L1) loss over the ``B^2`` entries;
* **angle**: for every triplet ``(j, i, k)`` the cosine of the angle at ``j`` between ``e_i - e_j`` and
  ``e_k - e_j``, matched with the Huber loss over all ``B^3`` triplets (the degenerate ones, ``i`` or ``k`` equal
  to ``j``, are 0 on both sides).

``L = ce_weight * CE + distance_weight * distance + angle_weight * angle``, weights 25 and 50 (paper and authors'
code, lunit-io/RKD, as RepDistiller and mdistiller run it). As there, squared distances are clamped at ``1e-12``
before the square root, the diagonal is 0, and the teacher's side is a constant. A statistic of the batch: under
DDP, of each process's share. Only relations are compared, so the widths may differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, label_term, summed_over_pairs
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput

__all__ = ["RKD_DEFAULTS", "RKDLoss", "pairwise_distances", "rkd_loss", "triplet_angles"]

RKD_DEFAULTS = {"distance_weight": 25.0, "angle_weight": 50.0}
"""The paper's and the benchmark codebases' weights."""

RKD_EPS = 1e-12
"""The floor of the squared distances before the square root (the authors' ``eps``)."""


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """``(B, B)`` Euclidean distances, divided by their mean over the distinct (non-zero) pairs; diagonal 0.

    Example:
        >>> import torch
        >>> d = pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]))
        >>> d.round(decimals=4).tolist()
        [[0.0, 0.75, 1.5], [0.75, 0.0, 0.75], [1.5, 0.75, 0.0]]
    """
    squared = embeddings.pow(2).sum(dim=1)
    squared_distances = squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * embeddings @ embeddings.t()
    distances = squared_distances.clamp(min=RKD_EPS).sqrt()
    distances = distances * (1 - torch.eye(len(embeddings), dtype=distances.dtype, device=distances.device))
    return distances / distances[distances > 0].mean()


def triplet_angles(embeddings: Tensor) -> Tensor:
    """``(B * B * B,)``: for each ``(j, i, k)``, the cosine between ``e_i - e_j`` and ``e_k - e_j`` (0 where ``i``
    or ``k`` is ``j``).

    Example:
        >>> import torch
        >>> triplet_angles(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])).view(3, 3, 3)[0].tolist()
        [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    differences = F.normalize(embeddings.unsqueeze(0) - embeddings.unsqueeze(1), p=2, dim=2)
    return torch.bmm(differences, differences.transpose(1, 2)).flatten()


@full_precision
def rkd_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    distance_weight: float = RKD_DEFAULTS["distance_weight"],
    angle_weight: float = RKD_DEFAULTS["angle_weight"],
    ce_weight: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + distance_weight * distance + angle_weight * angle`` (Huber losses, the teacher constant).

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's features of each matched layer (flattened per sample), ``B >= 2``.
        teacher_features: The teacher's of the same layers (constants: detached here).
        distance_weight: Weight of the distance term, ``>= 0``.
        angle_weight: Weight of the angle term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "distance", "angle"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> f = torch.randn(5, 8)
        >>> out = rkd_loss(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]), [f], [2 * f])  # scaled: same relations
        >>> float(out["distance"]) < 1e-10, float(out["angle"]) < 1e-10
        (True, True)
    """

    def distance_term(student: Tensor, teacher: Tensor) -> Tensor:
        return F.smooth_l1_loss(pairwise_distances(student.flatten(1)), pairwise_distances(teacher.flatten(1)))

    def angle_term(student: Tensor, teacher: Tensor) -> Tensor:
        return F.smooth_l1_loss(triplet_angles(student.flatten(1)), triplet_angles(teacher.flatten(1)))

    distance = summed_over_pairs("RKD", distance_term, student_features, teacher_features)
    angle = summed_over_pairs("RKD", angle_term, student_features, teacher_features)
    return label_term(student_logits, targets, ce_weight, label_smoothing, distance=(distance_weight, distance),
                      angle=(angle_weight, angle))


class RKDLoss(LayerPairsLoss):
    """Module form of :func:`rkd_loss`, checking its weights once.

    Example:
        >>> RKDLoss()
        RKDLoss(distance_weight=25.0, angle_weight=50.0, ce_weight=1.0)
    """

    function = staticmethod(rkd_loss)

    def __init__(self, distance_weight: float = RKD_DEFAULTS["distance_weight"],
                 angle_weight: float = RKD_DEFAULTS["angle_weight"], ce_weight: float = 1.0,
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__(label_smoothing, distance_weight=distance_weight, angle_weight=angle_weight,
                         ce_weight=ce_weight)
