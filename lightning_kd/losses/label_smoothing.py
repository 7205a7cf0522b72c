"""Label smoothing (LSR) in its two conventions: the label term of every method.

With smoothing ``eps`` over ``C`` classes the one-hot label becomes

* ``"uniform"`` (PyTorch's ``cross_entropy(label_smoothing=eps)``, Szegedy et al.): ``1 - eps + eps/C`` on
  the true class and ``eps/C`` on every class;
* ``"others"`` (the Tf-KD authors' code, Yuan et al. 2020): ``1 - eps`` on the true class and
  ``eps/(C - 1)`` on each of the others.

The two put the same mass ``eps`` on the wrong classes only when ``C`` is large; for 10 classes and
``eps = 0.1`` the true class keeps 0.91 with ``"uniform"`` and 0.90 with ``"others"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import check_choice, check_smoothing

__all__ = [
    "label_smoothing_from",
    "DEFAULT_SMOOTHING_CONVENTION",
    "LabelSmoothing",
    "SMOOTHING_CONVENTIONS",
    "SmoothingConvention",
    "smoothed_targets",
]

SmoothingConvention = Literal["uniform", "others"]
"""Where the smoothed mass goes: over all ``C`` classes (PyTorch) or over the ``C - 1`` wrong ones (Tf-KD's code)."""
SMOOTHING_CONVENTIONS: tuple[str, ...] = get_args(SmoothingConvention)
DEFAULT_SMOOTHING_CONVENTION: SmoothingConvention = "uniform"


def smoothed_targets(
    targets: Tensor, num_classes: int, eps: float, convention: str = DEFAULT_SMOOTHING_CONVENTION
) -> Tensor:
    """The ``(B, C)`` smoothed label distribution of class indices ``targets``.

    Example:
        >>> smoothed_targets(torch.tensor([1]), 3, 0.3)
        tensor([[0.1000, 0.8000, 0.1000]])
        >>> smoothed_targets(torch.tensor([1]), 3, 0.3, "others")
        tensor([[0.1500, 0.7000, 0.1500]])
    """
    check_smoothing(eps)
    check_choice("label smoothing convention", convention, SMOOTHING_CONVENTIONS)
    if convention == "uniform":
        on_true, off_true = 1 - eps + eps / num_classes, eps / num_classes
    else:
        if num_classes < 2:
            raise Refusal("the 'others' label smoothing spreads eps over the other classes: it needs C >= 2")
        on_true, off_true = 1 - eps, eps / (num_classes - 1)
    distribution = torch.full((len(targets), num_classes), off_true, device=targets.device)
    return distribution.scatter_(1, targets.unsqueeze(1), on_true)


@dataclass(frozen=True)
class LabelSmoothing:
    """How a method's label term smooths the labels: ``eps`` in ``[0, 1)`` and the convention.

    Calling it gives the label term, cross-entropy against the smoothed labels (plain cross-entropy
    when ``eps`` is 0).

    Example:
        >>> zs, y = torch.randn(4, 10), torch.tensor([0, 3, 9, 1])
        >>> bool(torch.isclose(LabelSmoothing(0.1)(zs, y), F.cross_entropy(zs, y, label_smoothing=0.1)))
        True
        >>> LabelSmoothing(1.0)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: label_smoothing must be in [0, 1), got 1.0
    """

    eps: float = 0.0
    convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION

    def __post_init__(self) -> None:
        check_smoothing(self.eps)
        check_choice("label smoothing convention", self.convention, SMOOTHING_CONVENTIONS)

    @per_position
    def __call__(self, logits: Tensor, targets: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
        """Cross-entropy of ``(B, C)`` logits against the smoothed labels, averaged (or per sample)."""
        if self.convention == "uniform" or self.eps == 0:  # PyTorch's own kernel computes this one
            return F.cross_entropy(logits, targets, label_smoothing=self.eps, reduction=reduction)
        target = smoothed_targets(targets, logits.shape[1], self.eps, self.convention).to(logits.dtype)
        per_sample = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        return per_sample.mean() if reduction == "mean" else per_sample

    @property
    def tag(self) -> str:
        """``ls0.1`` (uniform) or ``ls0.1-others``, empty without smoothing: what run names show."""
        if not self.eps:
            return ""
        return f"ls{self.eps:g}" + ("" if self.convention == DEFAULT_SMOOTHING_CONVENTION else f"-{self.convention}")


_SMOOTHING_ARGUMENTS = {"label_smoothing": "eps", "smoothing_convention": "convention"}
"""A task's label-smoothing arguments, and the :class:`LabelSmoothing` fields they set."""


def label_smoothing_from(arguments: Mapping[str, Any]) -> LabelSmoothing:
    """The label smoothing that a task's ``label_smoothing`` and ``smoothing_convention`` arguments ask for.

    Example:
        >>> label_smoothing_from({"label_smoothing": 0.1, "smoothing_convention": "others"}).tag
        'ls0.1-others'
        >>> label_smoothing_from({}).eps
        0.0
    """
    given = {field: arguments[name] for name, field in _SMOOTHING_ARGUMENTS.items() if name in arguments}
    return LabelSmoothing(**given)
