"""Probabilistic knowledge transfer, PKT (Passalis & Tefas 2018): the batch's laws of similarity matched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.pkt import PKT_DEFAULTS, PKTLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import LayerMatchingTask


class PKT(LayerMatchingTask):
    """``ce_weight * CE + pkt_weight * KL(teacher's p(j|i) || student's)`` of the batch's cosine similarities.

    See :func:`~lightning_kd.losses.pkt.pkt_loss` (the authors' code: the mean over the ``B^2`` pairs, weight
    30000). By default the penultimate features, as the benchmark codebases match them; any widths. Logs
    ``train/ce_loss`` and ``train/pkt_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        pkt_weight: Weight of the PKT term, ``>= 0`` (default 30000).
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
        >>> PKT(MLP(hidden_sizes=(16,)), SmallCNN((8, 16))).criterion
        PKTLoss(pkt_weight=30000.0, ce_weight=1.0)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        pkt_weight: float = PKT_DEFAULTS["pkt_weight"],
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
        self.criterion = PKTLoss(self.hparams["pkt_weight"], self.hparams["ce_weight"], self.label_smoothing())

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        return join_variants(valued_variant(arguments, PKT_DEFAULTS, {"pkt_weight": "pkt"}),
                             super().run_variant(arguments))
