"""Distribution-matching KD (KD^2M, Montesuma 2025): the student's features matched to the teacher's, batch by batch.

Each :class:`~lightning_kd.losses.distribution_matching.FeatureMatch` taps a student layer and a teacher
layer (module paths, or ``"penultimate"``), pools feature maps to vectors, maps the student's through a
learned projector when the widths differ, and adds ``lambda * D(student batch, teacher batch)`` to the
loss. The layers, the teacher's features and the projectors are
:class:`~lightning_kd.tasks.feature_distillation.FeatureDistillationTask`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, DEFAULT_TEMPERATURE, SmoothingConvention
from lightning_kd.losses.distances import distance_spec
from lightning_kd.losses.distribution_matching import FeatureMatch, distribution_matching_loss
from lightning_kd.losses.validation import check_alpha, check_temperature
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeatureDistillationTask, FeaturePair

DEFAULT_MATCHES: tuple[dict[str, Any], ...] = ({},)
"""One match with every default: exact W2 between the penultimate features, lambda 1e-4."""


def pool_features(features: Tensor, pooling: str) -> Tensor:
    """``(B, C, H, W)`` maps or ``(B, N, C)`` tokens to ``(B, D)`` vectors: averaged, max-pooled or flattened.

    Example:
        >>> import torch
        >>> pool_features(torch.ones(2, 3, 4, 4), "avg").shape, pool_features(torch.ones(2, 3, 4, 4), "flatten").shape
        (torch.Size([2, 3]), torch.Size([2, 48]))
    """
    if features.ndim == 2:
        return features
    if pooling == "flatten":
        return features.flatten(1)
    if features.ndim == 4:
        pooled = F.adaptive_avg_pool2d(features, 1) if pooling == "avg" else F.adaptive_max_pool2d(features, 1)
        return pooled.flatten(1)
    if features.ndim == 3:  # tokens (B, N, C)
        return features.mean(dim=1) if pooling == "avg" else features.amax(dim=1)
    raise Refusal(f"cannot pool features of shape {tuple(features.shape)}")


class DistributionMatchingKD(FeatureDistillationTask):
    """``(1 - kd_alpha) CE + kd_alpha T^2 KL + sum_i lambda_i D_i(student features, teacher features)`` (KD^2M).

    Logs ``train/ce_loss``, ``train/kd_loss`` (with ``kd_alpha > 0``) and each match's distance as
    ``train/match_<i>/<distance>_loss`` (``..._per_class_loss`` when class-conditional), unweighted.

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        matches: The feature matches, each a mapping of
            :class:`~lightning_kd.losses.distribution_matching.FeatureMatch` settings (``distance``,
            ``weight``, ``student_layer``, ``teacher_layer``, ``pooling``, ``projector``,
            ``class_conditional``, ``options``); default: one match with every default (exact W2
            between the penultimate features, lambda 1e-4).
        kd_alpha: Weight of an added logit KD term, in ``[0, 1]`` (default 0: the paper's loss).
        temperature: The logit KD term's temperature.
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> task = DistributionMatchingKD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)),
        ...                               matches=[{"distance": "mmd_rbf", "weight": 1.0}])
        >>> task.matches[0].distance, task.matches[0].projector
        ('mmd_rbf', 'auto')
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        matches: Sequence[Mapping[str, Any]] = DEFAULT_MATCHES,
        kd_alpha: float = 0.0,
        temperature: float = DEFAULT_TEMPERATURE,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        student_ckpt: str | Path | None = None,
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(student, teacher, teacher_ckpt, optimizer, lr_scheduler, student_ckpt, inherit_layers)

    def configure_losses(self) -> None:
        matches = self.hparams["matches"]
        if isinstance(matches, Mapping) or not isinstance(matches, Sequence) or not matches:
            raise Refusal("matches must be a non-empty list of feature matches (mappings of FeatureMatch settings)")
        self.matches = [FeatureMatch.from_dict(match) for match in matches]
        check_alpha(self.hparams["kd_alpha"])
        check_temperature(self.hparams["temperature"])
        self.smoothing = self.label_smoothing()

    def samples_needed(self, index: int) -> int:
        options = self.matches[index].options
        return distance_spec(self.matches[index].distance, options).samples_needed(options)

    def feature_pairs(self) -> list[FeaturePair]:
        return [FeaturePair(match.student_layer, match.teacher_layer, match.projector, match.compares_across_widths)
                for match in self.matches]

    def pair_name(self, index: int) -> str:
        return f"match {index + 1} ({self.matches[index].distance})"

    def check_pair(self, index: int, pair: FeaturePair, projected: Tensor, teacher: Tensor) -> None:
        match = self.matches[index]
        student, target = pool_features(projected, match.pooling), pool_features(teacher, match.pooling)
        if student.shape[1:] != target.shape[1:] and not match.compares_across_widths:
            raise Refusal(
                f"{self.pair_name(index)}: pooled student features {tuple(student.shape[1:])} and teacher features "
                f"{tuple(target.shape[1:])} differ (maps of different sizes?); use pooling: avg or max")

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        projected, teacher_raw, student_out, teacher_out = self.matched_features(batch)
        student = [pool_features(f, match.pooling) for match, f in zip(self.matches, projected, strict=True)]
        # the teachers' outputs come as float32: in the student's precision (a float64 student stays float64)
        teacher = [pool_features(f, match.pooling).to(s.dtype)
                   for match, f, s in zip(self.matches, teacher_raw, student, strict=True)]
        losses = distribution_matching_loss(student_out.logits, batch["target"], student, teacher, self.matches,
                                            teacher_out.logits.to(student_out.logits.dtype), self.hparams["kd_alpha"],
                                            self.hparams["temperature"], self.smoothing)
        return losses, student_out.logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        matches = arguments.get("matches") or DEFAULT_MATCHES
        names = [FeatureMatch.from_dict(match).part_name(i).split("/")[1] for i, match in enumerate(matches)]
        kd = f"kd{arguments['kd_alpha']:g}" if arguments.get("kd_alpha") else None
        return join_variants("+".join(names), kd, super().run_variant(arguments))
