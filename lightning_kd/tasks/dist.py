"""DIST (Huang et al. 2022): distillation from a stronger teacher through the correlations of the predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.dist import DIST_DEFAULTS, DISTLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask


class DIST(DistillationTask):
    """``ce_weight * CE + inter_weight * inter + intra_weight * intra`` (:func:`~lightning_kd.losses.dist.dist_loss`).

    ``inter`` is ``T^2 * (1 - mean Pearson correlation)`` of each sample's softened probabilities between student
    and teacher, ``intra`` the same of each class's probabilities over the batch. The weights are independent
    (none is ``1 -`` another); the defaults are the authors' CIFAR-100 settings. Logs ``train/ce_loss``,
    ``train/inter_loss`` and ``train/intra_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        inter_weight: Weight of the inter-class relation term, ``>= 0`` (default 2).
        intra_weight: Weight of the intra-class relation term, ``>= 0`` (default 2).
        temperature: Softmax temperature, ``> 0`` (default 4).
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
        >>> DIST(MLP(num_classes=10), SmallCNN(num_classes=10), intra_weight=1.0).criterion
        DISTLoss(inter_weight=2.0, intra_weight=1.0, temperature=4.0, ce_weight=1.0)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        inter_weight: float = DIST_DEFAULTS["inter_weight"],
        intra_weight: float = DIST_DEFAULTS["intra_weight"],
        temperature: float = DIST_DEFAULTS["temperature"],
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
        self.criterion = DISTLoss(hparams["inter_weight"], hparams["intra_weight"], hparams["temperature"],
                                  hparams["ce_weight"], self.label_smoothing())

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        (teacher,) = self.teacher_outputs(batch)
        logits = self.student(batch["input"])
        return self.criterion(logits, teacher.logits, batch["target"]), logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        own = valued_variant(arguments, DIST_DEFAULTS, {"inter_weight": "inter", "intra_weight": "intra",
                                                         "temperature": "T"})
        return join_variants(own, super().run_variant(arguments))
