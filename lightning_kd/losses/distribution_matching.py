"""Distribution-matching KD (KD^2M, Montesuma 2025): match the student's feature distribution to the teacher's.

``L = (1 - kd_alpha) * CE(zs, y) + kd_alpha * T^2 * KL(softmax(zt/T) || softmax(zs/T)) + sum_i lambda_i * D_i``

where each :class:`FeatureMatch` ``i`` names a student layer, a teacher layer, a distance ``D_i`` between
the two batches of (pooled, projected) features (:mod:`lightning_kd.losses.distances`), its weight
``lambda_i`` and whether it is applied per class. ``kd_alpha = 0`` (the default) is the paper's loss,
without a logit term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.distances import CLASS_REDUCTIONS, class_conditional_distance, distance_spec, feature_distance
from lightning_kd.losses.divergences import soft_target_kl
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_alpha, check_choice, check_temperature, check_weight
from lightning_kd.models.taps import PENULTIMATE, STAGES

__all__ = [
    "FeatureMatch",
    "distribution_matching_loss",
]

Pooling = Literal["avg", "max", "flatten"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
Projector = Literal["auto", "linear", "none"]
PROJECTORS: tuple[str, ...] = get_args(Projector)
ClassConditional = Literal["none", "sum", "mean"]
DEFAULT_DISTANCE = "wasserstein_exact"
DEFAULT_MATCH_WEIGHT = 1e-4
"""The paper's lambda."""


@dataclass(frozen=True)
class FeatureMatch:
    """One (student layer, teacher layer, distance, weight) pair of a distribution-matching loss.

    Attributes:
        distance: A name of :data:`~lightning_kd.losses.distances.DISTANCES` (default: exact W2).
        weight: ``lambda >= 0`` (default 1e-4, the paper's).
        student_layer: Module path of the student's layer, or ``"penultimate"`` (default).
        teacher_layer: Module path of the teacher's layer, or ``"penultimate"`` (default).
        pooling: How feature maps (and token sequences) become vectors: ``"avg"`` (default), ``"max"``
            or ``"flatten"``; vectors are kept as they are.
        projector: ``"auto"`` (default: a learned linear map, a 1x1 convolution on maps, when the widths
            differ; none for Gromov-Wasserstein, which compares across widths), ``"linear"`` (always
            one) or ``"none"`` (never: different widths are then refused).
        class_conditional: ``"none"`` (default), or the distance per class present on both sides,
            ``"sum"`` or ``"mean"`` over the classes.
        options: The distance's options (e.g. ``{"bandwidth": "mean"}`` for ``mmd_rbf``).

    Example:
        >>> FeatureMatch.from_dict({"distance": "mmd_rbf", "options": {"bandwidth": "mean"}}).options
        {'bandwidth': 'mean'}
        >>> FeatureMatch.from_dict({"distanse": "mmd_rbf"})
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: a feature match has no setting 'distanse'; its settings: distance, weight, \
student_layer, teacher_layer, pooling, projector, class_conditional, options
    """

    distance: str = DEFAULT_DISTANCE
    weight: float = DEFAULT_MATCH_WEIGHT
    student_layer: str = PENULTIMATE
    teacher_layer: str = PENULTIMATE
    pooling: Pooling = "avg"
    projector: Projector = "auto"
    class_conditional: ClassConditional = "none"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for side, layer in (("student_layer", self.student_layer), ("teacher_layer", self.teacher_layer)):
            if layer == STAGES:
                raise Refusal(f"a feature match pairs one layer with one layer, but {side} 'stages' names every stage: "
                              "give one by path (e.g. stages.2), or one match per stage")
        distance_spec(self.distance, self.options)
        check_weight(self.weight, "a feature match's weight")
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("projector", self.projector, PROJECTORS)
        check_choice("class_conditional", self.class_conditional, ("none", *CLASS_REDUCTIONS))

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any] | FeatureMatch) -> FeatureMatch:
        """A match from its settings (a config's mapping), refusing unknown ones by name."""
        if isinstance(settings, FeatureMatch):
            return settings
        names = [f.name for f in fields(cls)]
        unknown = [key for key in settings if key not in names]
        if unknown:
            raise Refusal(f"a feature match has no setting {unknown[0]!r}; its settings: {', '.join(names)}")
        return cls(**{key: dict(value) if key == "options" else value for key, value in settings.items()})

    @property
    def compares_across_widths(self) -> bool:
        """Whether the distance compares features of different widths (Gromov-Wasserstein)."""
        return self.distance == "gromov_wasserstein"

    def part_name(self, index: int) -> str:
        """Name of this match's value among the loss's parts (logged as ``train/<name>_loss``).

        Example:
            >>> FeatureMatch(distance="mmd_rbf", class_conditional="sum").part_name(0)
            'match_1/mmd_rbf_per_class'
        """
        suffix = "" if self.class_conditional == "none" else "_per_class"
        return f"match_{index + 1}/{self.distance}{suffix}"


def match_distance(match: FeatureMatch, student: Tensor, teacher: Tensor, targets: Tensor) -> Tensor:
    """One match's distance between the two (pooled, projected) feature batches of the same samples."""
    if match.class_conditional == "none":
        return feature_distance(match.distance, student, teacher, **match.options)
    value, _ = class_conditional_distance(match.distance, student, targets, teacher, targets,
                                          match.class_conditional, **match.options)
    return value


@full_precision
def distribution_matching_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    matches: Sequence[FeatureMatch],
    teacher_logits: Tensor | None = None,
    kd_alpha: float = 0.0,
    temperature: float = 4.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """The KD^2M loss (see the module), from features already pooled and projected, one pair per match.

    Returns:
        ``{"loss": total, "ce": ..., "kd": ... (with kd_alpha > 0), "match_<i>/<distance>": ...}``, the parts
        unweighted.

    Example:
        >>> import torch
        >>> zs, y, f = torch.randn(8, 10), torch.randint(0, 10, (8,)), torch.randn(8, 4)
        >>> out = distribution_matching_loss(zs, y, [f], [f], [FeatureMatch("mmd_linear", weight=0.5)])
        >>> sorted(out), float(out["match_1/mmd_linear"])
        (['ce', 'loss', 'match_1/mmd_linear'], 0.0)
    """
    check_alpha(kd_alpha)
    check_temperature(temperature)
    if not len(student_features) == len(teacher_features) == len(matches):
        raise Refusal(f"{len(matches)} matches need as many student and teacher feature batches, got "
                         f"{len(student_features)} and {len(teacher_features)}")
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    parts: dict[str, Tensor] = {"ce": ce}
    total = (1 - kd_alpha) * ce
    if kd_alpha > 0:
        if teacher_logits is None:
            raise Refusal("kd_alpha > 0 needs the teacher's logits")
        parts["kd"] = soft_target_kl(student_logits, teacher_logits, temperature)
        total = total + kd_alpha * parts["kd"]
    for index, (match, student, teacher) in enumerate(zip(matches, student_features, teacher_features, strict=True)):
        value = match_distance(match, student, teacher, targets)
        parts[match.part_name(index)] = value
        total = total + match.weight * value
    return {"loss": total, **parts}
