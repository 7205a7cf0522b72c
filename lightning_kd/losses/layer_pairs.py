"""What the feature losses over pairs of layers share: the pairs checked, terms summed over them, the label term.

A feature loss takes the student's and the teacher's features as two lists, one tensor per matched pair of layers
(in order), and sums its term over the pairs; the teacher's features are constants, detached here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.validation import LossOutput, check_weight

__all__ = ["LayerPairsLoss", "check_feature_maps", "label_term", "pool_to_common_size", "summed_over_pairs"]


def summed_over_pairs(method: str, term: Callable[[Tensor, Tensor], Tensor], student_features: Sequence[Tensor],
                      teacher_features: Sequence[Tensor], detach_teacher: bool = True) -> Tensor:
    """``sum_i term(student_i, teacher_i.detach())`` over the matched pairs (``detach_teacher=False``: the teacher's
    side as given, for a method whose teacher side passes through a map it trains).

    Raises:
        Refusal: The lists are empty or differ in length.

    Example:
        >>> import torch
        >>> float(summed_over_pairs("a method", lambda s, t: (s - t).abs().sum(), [torch.ones(2)] * 2,
        ...                         [torch.zeros(2)] * 2))
        4.0
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise Refusal(f"{method} matches layer to layer: got {len(student_features)} student and "
                      f"{len(teacher_features)} teacher features")
    terms = [term(student, teacher.detach() if detach_teacher else teacher)
             for student, teacher in zip(student_features, teacher_features, strict=True)]
    return sum(terms[1:], terms[0])


def check_feature_maps(method: str, student: Tensor, teacher: Tensor) -> None:
    """Refuse features that are not ``(B, C, H, W)`` maps, for a method that reads their spatial layout.

    Example:
        >>> import torch
        >>> check_feature_maps("attention transfer", torch.zeros(2, 8), torch.zeros(2, 8, 4, 4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: attention transfer compares feature maps (B, C, H, W); got student (2, 8) ...
    """
    if student.ndim != 4 or teacher.ndim != 4:
        raise Refusal(f"{method} compares feature maps (B, C, H, W); got student {tuple(student.shape)} and "
                      f"teacher {tuple(teacher.shape)}: tap convolutional stages (\"stages\", \"stages[i]\" or "
                      "module paths), not pooled features")


def pool_to_common_size(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Two ``(B, C, H, W)`` maps at the smaller one's resolution: the larger average-pooled down to it.

    The benchmark codebases' rule for attention transfer and NST between stages of different resolutions.

    Example:
        >>> import torch
        >>> s, t = pool_to_common_size(torch.ones(2, 3, 8, 8), torch.ones(2, 5, 4, 4))
        >>> tuple(s.shape), tuple(t.shape)
        ((2, 3, 4, 4), (2, 5, 4, 4))
    """
    if student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
    return F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)


def label_term(student_logits: Tensor, targets: Tensor, ce_weight: float, label_smoothing: LabelSmoothing | None,
               **weighted: tuple[float, Tensor]) -> LossOutput:
    """``{"loss": ce_weight * CE + sum_k weight_k * term_k, "ce": CE, k: term_k}``, the parts unweighted.

    A term of weight 0 is left out of the total's graph, not multiplied by 0: the layers only it reaches get no
    gradient (``None``), so an optimizer leaves them as they are (no weight decay, no momentum). FitNets' first
    stage, the hints alone, trains only the layers up to the guided one this way, as the paper does.

    Example:
        >>> import torch
        >>> out = label_term(torch.zeros(2, 2), torch.tensor([0, 1]), 1.0, None, at=(10.0, torch.tensor(0.5)))
        >>> round(float(out["loss"]), 4), sorted(out)
        (5.6931, ['at', 'ce', 'loss'])
    """
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    parts = [(ce_weight, ce), *weighted.values()]
    contributing = [weight * term for weight, term in parts if weight != 0]
    total = sum(contributing[1:], contributing[0]) if contributing else 0 * ce
    return {"loss": total, "ce": ce, **{name: term for name, (_, term) in weighted.items()}}


class LayerPairsLoss(nn.Module):
    """The module twin of a loss over pairs of layers: its settings checked once, then the function called with them.

    A twin names its ``function`` and passes its settings by name; every setting named ``*_weight`` is checked
    as an independent weight (finite, ``>= 0``), others by the twin itself.
    """

    function: ClassVar[Callable[..., LossOutput]]

    def __init__(self, label_smoothing: LabelSmoothing | None = None, **settings: Any) -> None:
        super().__init__()
        for name, value in settings.items():
            if name.endswith("_weight"):
                check_weight(value, name)
        self.settings = settings
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, targets: Tensor, student_features: list[Tensor],
                teacher_features: list[Tensor]) -> LossOutput:
        return type(self).function(student_logits, targets, student_features, teacher_features, **self.settings,
                                   label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.settings.items())
