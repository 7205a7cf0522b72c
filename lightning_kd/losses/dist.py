"""DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher"): match the predictions' correlations.

With ``Y_s = softmax(zs / T)`` and ``Y_t = softmax(zt / T)`` (``B x C``) and ``rho`` Pearson's correlation,

``L = ce_weight * CE(zs, y) + inter_weight * T^2 * (1 - mean_i rho(Y_s[i, :], Y_t[i, :]))
+ intra_weight * T^2 * (1 - mean_c rho(Y_s[:, c], Y_t[:, c]))``:

the *inter-class* term matches each sample's ranking of the classes, the *intra-class* term each class's ranking
of the batch's samples. Only relations are matched, not values, so a student need not reproduce a much stronger
teacher's exact probabilities. As the authors' code, the correlation is the cosine of the centred rows with
``1e-8`` added to the product of their norms, and the temperature's ``T^2`` is inside each term. Their CIFAR-100
runs weigh the label term 1 and both relation terms 2 (``kd_loss_weight 2`` times ``beta = gamma = 1``) at
``T = 4``: the defaults here. The intra-class term is a statistic of the batch (under DDP, of each process's).
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_same_shape, check_temperature, check_weight

__all__ = ["DIST_DEFAULTS", "DISTLoss", "dist_loss", "pearson_correlation"]

DIST_DEFAULTS = {"inter_weight": 2.0, "intra_weight": 2.0, "temperature": 4.0}
"""The authors' CIFAR-100 settings (``configs/strategies/distill/dist_cifar.yaml``: ``kd_loss_weight 2``,
``dist_t4``), with the label term's weight 1."""


def pearson_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Each row's Pearson correlation between ``a`` and ``b`` (``(N, D)``): the cosine of the centred rows.

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 1.0]])
        >>> pearson_correlation(a, 2 * a + 1).round(decimals=4), pearson_correlation(a, -a).round(decimals=4)
        (tensor([1., 1.]), tensor([-1., -1.]))
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@per_position
def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    inter_weight: float = DIST_DEFAULTS["inter_weight"],
    intra_weight: float = DIST_DEFAULTS["intra_weight"],
    temperature: float = DIST_DEFAULTS["temperature"],
    ce_weight: float = 1.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """DIST: ``ce_weight * CE + inter_weight * inter + intra_weight * intra`` (both relation terms with ``T^2``).

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (constants: detached here).
        targets: ``(B,)`` class indices.
        inter_weight: Weight of the inter-class term (each sample's classes), ``>= 0``.
        intra_weight: Weight of the intra-class term (each class's samples), ``>= 0``.
        temperature: Softmax temperature ``T > 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "inter", "intra"}``: the total and its parts, unweighted (the relation terms with ``T^2``).

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> out = dist_loss(zs, zt, y)
        >>> bool(torch.isclose(out["loss"], out["ce"] + 2 * out["inter"] + 2 * out["intra"]))
        True
        >>> float(dist_loss(zt, zt, y)["inter"]) < 1e-4  # a student that ranks as its teacher does
        True
    """
    check_same_shape(student_logits, teacher_logits)
    student = (student_logits / temperature).softmax(dim=1)
    teacher = (teacher_logits.detach() / temperature).softmax(dim=1)
    scale = temperature**2
    inter = scale * (1 - pearson_correlation(student, teacher).mean())
    intra = scale * (1 - pearson_correlation(student.t(), teacher.t()).mean())
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    return {"loss": ce_weight * ce + inter_weight * inter + intra_weight * intra, "ce": ce, "inter": inter,
            "intra": intra}


class DISTLoss(nn.Module):
    """Module form of :func:`dist_loss`, checking every weight once.

    Example:
        >>> DISTLoss()
        DISTLoss(inter_weight=2.0, intra_weight=2.0, temperature=4.0, ce_weight=1.0)
    """

    def __init__(self, inter_weight: float = DIST_DEFAULTS["inter_weight"],
                 intra_weight: float = DIST_DEFAULTS["intra_weight"], temperature: float = DIST_DEFAULTS["temperature"],
                 ce_weight: float = 1.0, label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        for name, weight in (("inter_weight", inter_weight), ("intra_weight", intra_weight), ("ce_weight", ce_weight)):
            check_weight(weight, name)
        check_temperature(temperature)
        self.inter_weight, self.intra_weight, self.temperature = inter_weight, intra_weight, temperature
        self.ce_weight = ce_weight
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> LossOutput:
        return dist_loss(student_logits, teacher_logits, targets, self.inter_weight, self.intra_weight,
                         self.temperature, self.ce_weight, self.label_smoothing)

    def extra_repr(self) -> str:
        return (f"inter_weight={self.inter_weight}, intra_weight={self.intra_weight}, "
                f"temperature={self.temperature}, ce_weight={self.ce_weight}")
