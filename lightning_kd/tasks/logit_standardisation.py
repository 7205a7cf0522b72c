"""KD on standardised logits (Sun et al. 2024): each sample's logits z-scored before the temperature softmax."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.logit_standardisation import LOGIT_STANDARDISATION_DEFAULTS, StandardisedKDLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask


class LogitStandardisedKD(DistillationTask):
    """``ce_weight * CE + kd_weight * T^2 * KL(softmax(Z(zt)/T) || softmax(Z(zs)/T))``, ``Z`` the z-score.

    See :func:`~lightning_kd.losses.logit_standardisation.standardised_kd_loss`. The weights are independent (not
    Hinton's ``alpha``); the defaults are the authors' CIFAR-100 settings (``ce_weight`` 0.1, ``kd_weight`` 9,
    ``T`` 2). Logs ``train/ce_loss`` and ``train/kd_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        kd_weight: Weight of the distillation term, ``>= 0`` (default 9).
        temperature: Base temperature, ``> 0`` (default 2).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 0.1).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> LogitStandardisedKD(MLP(num_classes=10), SmallCNN(num_classes=10)).criterion
        StandardisedKDLoss(kd_weight=9.0, temperature=2.0, ce_weight=0.1)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        kd_weight: float = LOGIT_STANDARDISATION_DEFAULTS["kd_weight"],
        temperature: float = LOGIT_STANDARDISATION_DEFAULTS["temperature"],
        ce_weight: float = LOGIT_STANDARDISATION_DEFAULTS["ce_weight"],
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
        self.criterion = StandardisedKDLoss(hparams["kd_weight"], hparams["temperature"], hparams["ce_weight"],
                                            self.label_smoothing())

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        (teacher,) = self.teacher_outputs(batch)
        logits = self.student(batch["input"])
        return self.criterion(logits, teacher.logits, batch["target"]), logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        labels = {"kd_weight": "kd", "ce_weight": "ce", "temperature": "T"}
        return join_variants(valued_variant(arguments, LOGIT_STANDARDISATION_DEFAULTS, labels),
                             super().run_variant(arguments))
