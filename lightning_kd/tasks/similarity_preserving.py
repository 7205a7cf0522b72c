"""Similarity-preserving KD, SP (Tung & Mori 2019): the student keeps the teacher's similarities between samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.similarity_preserving import SP_DEFAULTS, SimilarityPreservingLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import LayerMatchingTask


class SimilarityPreserving(LayerMatchingTask):
    """``ce_weight * CE + sp_weight * sum_layers ||G_t - G_s||_F^2 / B^2``, ``G`` the batch's row-normalised Gram.

    See :func:`~lightning_kd.losses.similarity_preserving.similarity_preserving_loss`. By default the last stage's
    maps, as the benchmark codebases match them (weight 3000); any widths and resolutions. Logs ``train/ce_loss``
    and ``train/sp_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        sp_weight: Weight of the similarity term, ``>= 0`` (default 3000).
        student_layers: The student's layers (default ``"stages[-1]"``).
        teacher_layers: The teacher's, as many (default ``"stages[-1]"``).
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
        >>> task = SimilarityPreserving(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)), student_layers="penultimate")
        >>> [(pair.student_layer, pair.teacher_layer) for pair in task.feature_pairs()]
        [('penultimate', 'body.6')]
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        sp_weight: float = SP_DEFAULTS["sp_weight"],
        student_layers: LayerSpec = "stages[-1]",
        teacher_layers: LayerSpec = "stages[-1]",
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
        self.criterion = SimilarityPreservingLoss(self.hparams["sp_weight"], self.hparams["ce_weight"],
                                                  self.label_smoothing())

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        return join_variants(valued_variant(arguments, SP_DEFAULTS, {"sp_weight": "sp"}),
                             super().run_variant(arguments))
