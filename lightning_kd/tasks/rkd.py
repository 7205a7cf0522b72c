"""Relational knowledge distillation, RKD (Park et al. 2019): distances and angles between a batch's embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.rkd import RKD_DEFAULTS, RKDLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import LayerMatchingTask


class RKD(LayerMatchingTask):
    """``ce_weight * CE + distance_weight * distance + angle_weight * angle`` between the batch's embeddings.

    See :func:`~lightning_kd.losses.rkd.rkd_loss` (Huber losses on the mean-normalised pairwise distances and on
    the angles of every triplet; weights 25 and 50, paper and authors' code). By default the penultimate
    features; any widths. A batch needs 2 samples (refused before training otherwise). Logs ``train/ce_loss``,
    ``train/distance_loss`` and ``train/angle_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        distance_weight: Weight of the distance term, ``>= 0`` (default 25).
        angle_weight: Weight of the angle term, ``>= 0`` (default 50).
        student_layers: The student's layers (default ``"penultimate"``).
        teacher_layers: The teacher's, as many (default ``"penultimate"``).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> RKD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)), angle_weight=0.0).criterion
        RKDLoss(distance_weight=25.0, angle_weight=0.0, ce_weight=1.0)
    """

    needs_samples = 2

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        distance_weight: float = RKD_DEFAULTS["distance_weight"],
        angle_weight: float = RKD_DEFAULTS["angle_weight"],
        student_layers: LayerSpec = "penultimate",
        teacher_layers: LayerSpec = "penultimate",
        ce_weight: float = 1.0,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        student_ckpt: str | Path | None = None,
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(student, teacher, teacher_ckpt, optimizer, lr_scheduler, student_ckpt, inherit_layers)

    def configure_losses(self) -> None:
        hparams = self.hparams
        self.criterion = RKDLoss(hparams["distance_weight"], hparams["angle_weight"], hparams["ce_weight"],
                                 self.label_smoothing())

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        own = valued_variant(arguments, RKD_DEFAULTS, {"distance_weight": "dist", "angle_weight": "angle"})
        return join_variants(own, super().run_variant(arguments))
