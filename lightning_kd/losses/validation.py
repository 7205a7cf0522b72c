"""Argument checks shared by every loss, in one place (as torchmetrics keeps its validation)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import Tensor

from lightning_kd.errors import Refusal

__all__ = [
    "LossOutput",
    "check_weight",
    "check_alpha",
    "check_smoothing",
    "check_temperature",
    "check_positive",
]

LossOutput = dict[str, Tensor]
"""What every loss returns: ``{"loss": total, **parts}`` (the parts unweighted, logged by the tasks)."""


def check_temperature(temperature: float) -> None:
    """Raise ``ValueError`` unless ``temperature`` is finite and ``> 0``.

    Example:
        >>> check_temperature(float("inf"))
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: temperature must be finite and > 0, got inf
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise Refusal(f"temperature must be finite and > 0, got {temperature}")


def check_alpha(alpha: float, name: str = "alpha") -> None:
    """Refuse a convex weight outside ``[0, 1]`` (NaN too): ``alpha`` weighs one term, ``1 - alpha`` the other.

    Example:
        >>> check_alpha(1.5)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: alpha must be in [0, 1], got 1.5
    """
    if not 0 <= alpha <= 1:
        raise Refusal(f"{name} must be in [0, 1], got {alpha}")


def check_weight(weight: float, name: str) -> None:
    """Refuse a loss weight that is negative, NaN or infinite: an independent weight of one term (no ``1 - w``).

    Methods whose terms are weighted independently (DKD's ``tckd_weight`` and ``nckd_weight``, a feature term's
    ``lambda``) check each weight here; a weight of 0 switches its term off.

    Example:
        >>> check_weight(8.0, "beta")
        >>> check_weight(-1.0, "beta")
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: beta must be finite and >= 0, got -1.0
    """
    if not (math.isfinite(weight) and weight >= 0):
        raise Refusal(f"{name} must be finite and >= 0, got {weight}")


def check_positive(value: float, name: str) -> None:
    """Refuse a setting that must be finite and ``> 0`` (an exponent, a width, a variance floor).

    Example:
        >>> check_positive(0.0, "p")
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: p must be finite and > 0, got 0.0
    """
    if not (math.isfinite(value) and value > 0):
        raise Refusal(f"{name} must be finite and > 0, got {value}")


def check_smoothing(eps: float) -> None:
    """Raise ``ValueError`` unless the label smoothing ``eps`` is in ``[0, 1)`` (NaN is refused too).

    Example:
        >>> check_smoothing(-0.1)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: label_smoothing must be in [0, 1), got -0.1
    """
    if not 0 <= eps < 1:
        raise Refusal(f"label_smoothing must be in [0, 1), got {eps}")


def check_choice(kind: str, name: str, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the choices unless ``name`` is one of them.

    Example:
        >>> check_choice("Born-Again loss", "kl", ("ban", "kd"))
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: unknown Born-Again loss 'kl'; choose one of ban, kd
    """
    choices = tuple(choices)
    if name not in choices:
        raise Refusal(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")


def check_same_shape(student_logits: Tensor, teacher_logits: Tensor, what: str = "teacher logits") -> None:
    """Raise ``ValueError`` when the student's ``(B, C)`` logits and the target's shapes differ."""
    if student_logits.shape != teacher_logits.shape:
        raise Refusal(
            f"student logits {tuple(student_logits.shape)} and {what} {tuple(teacher_logits.shape)} "
            "differ in shape; do student and teacher predict the same number of classes?"
        )
