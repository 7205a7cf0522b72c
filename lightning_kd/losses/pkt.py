"""Probabilistic knowledge transfer, PKT (Passalis & Tefas 2018): match the batch's conditional similarity laws.

Each sample's features (the penultimate by default, flattened) are L2-normalised; their cosine similarities, mapped
to ``[0, 1]`` by ``(cos + 1) / 2``, are normalised per row into ``p(j | i)``, and the student's law is pulled towards
the teacher's by ``KL``. As the authors' code (passalis/probabilistic_kt's ``cosine_similarity_loss``, which
RepDistiller and mdistiller copy): ``pkt = mean_{i, j} t(j|i) log((t(j|i) + eps) / (s(j|i) + eps))`` with ``eps``
1e-7, the mean over all ``B^2`` pairs (the paper writes the sum, Eq. 11: ``B^2`` times this, and leaves out the
diagonal ``i = j``), weight 30000. Only similarities are compared, so the widths may differ. A statistic of the
batch: under DDP, of each process's share.
"""

from __future__ import annotations

from torch import Tensor

from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.layer_pairs import LayerPairsLoss, label_term, summed_over_pairs
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput

__all__ = ["PKT_DEFAULTS", "PKTLoss", "conditional_similarity", "pkt_loss"]

PKT_DEFAULTS = {"pkt_weight": 30000.0}
"""RepDistiller's and mdistiller's CIFAR-100 weight."""

PKT_EPS = 1e-7
"""The authors' ``eps``, in the norms and inside the logarithm."""


def conditional_similarity(features: Tensor) -> Tensor:
    """``(B, B)``: each row ``i`` the law ``p(j | i)`` of the batch's cosine similarities mapped to ``[0, 1]``.

    A zero feature vector's similarities are zero, as in the authors' code.

    Example:
        >>> import torch
        >>> [round(float(v), 4) for v in conditional_similarity(torch.randn(3, 5)).sum(dim=1)]
        [1.0, 1.0, 1.0]
    """
    flat = features.flatten(1)
    unit = (flat / (flat.norm(dim=1, keepdim=True) + PKT_EPS)).nan_to_num(0.0)
    similarity = (unit @ unit.t() + 1) / 2
    return similarity / similarity.sum(dim=1, keepdim=True)


@full_precision
def pkt_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: list[Tensor],
    teacher_features: list[Tensor],
    pkt_weight: float = PKT_DEFAULTS["pkt_weight"],
    ce_weight: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + pkt_weight * sum_layers mean_{i,j} t(j|i) log((t(j|i) + eps) / (s(j|i) + eps))``.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_features: The student's features of each matched layer (flattened per sample).
        teacher_features: The teacher's of the same layers (constants: detached here).
        pkt_weight: Weight of the PKT term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "pkt"}``: the total and its parts, unweighted.

    Example:
        >>> import torch
        >>> f = torch.randn(4, 6)
        >>> float(pkt_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), [f], [3 * f])["pkt"]) < 1e-6
        True
    """

    def term(student: Tensor, teacher: Tensor) -> Tensor:
        s, t = conditional_similarity(student), conditional_similarity(teacher)
        return (t * ((t + PKT_EPS) / (s + PKT_EPS)).log()).mean()

    pkt = summed_over_pairs("PKT", term, student_features, teacher_features)
    return label_term(student_logits, targets, ce_weight, label_smoothing, pkt=(pkt_weight, pkt))


class PKTLoss(LayerPairsLoss):
    """Module form of :func:`pkt_loss`, checking its weights once.

    Example:
        >>> PKTLoss()
        PKTLoss(pkt_weight=30000.0, ce_weight=1.0)
    """

    function = staticmethod(pkt_loss)

    def __init__(self, pkt_weight: float = PKT_DEFAULTS["pkt_weight"], ce_weight: float = 1.0,
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__(label_smoothing, pkt_weight=pkt_weight, ce_weight=ce_weight)
