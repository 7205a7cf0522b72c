"""Vanilla knowledge distillation (Hinton, Vinyals & Dean 2015)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.losses import (
    DEFAULT_ALPHA,
    DEFAULT_SMOOTHING_CONVENTION,
    DEFAULT_TEMPERATURE,
    HintonKDLoss,
    SmoothingConvention,
)
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask


class VanillaKD(DistillationTask):
    """``L = (1 - alpha) * CE(zs, y) + alpha * T^2 * KL(softmax(zt/T) || softmax(zs/T))``.

    ``alpha`` weights the distillation term (Hinton's convention; torchdistill's ``KDLoss`` weights
    cross-entropy with ``alpha``). Logs ``train/loss``, ``train/ce_loss`` and ``train/kd_loss``
    (the unweighted parts).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        alpha: Weight of the distillation term, in ``[0, 1]``.
        temperature: Softmax temperature, ``> 0``.
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> task = VanillaKD(SmallCNN((8,), num_classes=10), SmallCNN((16, 32), num_classes=10), temperature=4.0)
        >>> task.teacher.training, next(task.teacher.parameters()).requires_grad
        (False, False)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        alpha: float = DEFAULT_ALPHA,
        temperature: float = DEFAULT_TEMPERATURE,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        student_ckpt: str | Path | None = None,
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(student, teacher, teacher_ckpt, optimizer, lr_scheduler, student_ckpt, inherit_layers)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        own = f"T{arguments.get('temperature', DEFAULT_TEMPERATURE):g}-alpha{arguments.get('alpha', DEFAULT_ALPHA):g}"
        return join_variants(own, super().run_variant(arguments))

    def configure_losses(self) -> None:
        self.criterion = HintonKDLoss(self.hparams["alpha"], self.hparams["temperature"], self.label_smoothing())

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        (teacher,) = self.teacher_outputs(batch)
        logits = self.student(batch["input"])
        return self.criterion(logits, teacher.logits, batch["target"]), logits
