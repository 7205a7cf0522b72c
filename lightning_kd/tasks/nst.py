"""Neuron selectivity transfer, NST (Huang & Wang 2017): the distributions of the neurons' spatial patterns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.nst import NST_DEFAULTS, NSTLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import LayerMatchingTask


class NST(LayerMatchingTask):
    """``ce_weight * CE + nst_weight * sum_stages MMD^2`` of the channels' normalised spatial patterns.

    See :func:`~lightning_kd.losses.nst.nst_loss` (polynomial kernel ``(x . y)^2``, weight 50, as the paper's best
    and the benchmark codebases). By default every stage of the student against the teacher's stage of the same
    depth, the larger map pooled to the smaller; the channel counts may differ. Logs ``train/ce_loss`` and
    ``train/nst_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        nst_weight: Weight of the MMD term, ``>= 0`` (default 50).
        student_layers: The student's feature maps (default ``"stages"``).
        teacher_layers: The teacher's, as many (default ``"stages"``).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> NST(SmallCNN((8, 16)), SmallCNN((16, 32)), nst_weight=25.0).criterion
        NSTLoss(nst_weight=25.0, ce_weight=1.0)
    """

    needs_maps = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        nst_weight: float = NST_DEFAULTS["nst_weight"],
        student_layers: LayerSpec = "stages",
        teacher_layers: LayerSpec = "stages",
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
        self.criterion = NSTLoss(self.hparams["nst_weight"], self.hparams["ce_weight"], self.label_smoothing())

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        return join_variants(valued_variant(arguments, NST_DEFAULTS, {"nst_weight": "nst"}),
                             super().run_variant(arguments))
