"""Decoupled Knowledge Distillation (Zhao et al. 2022): the target-class and non-target-class terms weighted apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.dkd import DKD_DEFAULTS, DKDLoss, dkd_warmup
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask


class DecoupledKD(DistillationTask):
    """``ce_weight * CE + w(epoch) * (tckd_weight * TCKD + nckd_weight * NCKD)``, both KL terms times ``T^2``.

    TCKD compares the teacher's and the student's binary target/non-target probabilities, NCKD their
    distributions over the non-target classes (:func:`~lightning_kd.losses.dkd.dkd_loss`). The weights are
    independent (none is ``1 -`` another): ``tckd_weight`` weighs TCKD (the paper's alpha), ``nckd_weight`` NCKD
    (its beta), ``ce_weight`` the label term. ``w`` rises linearly to 1 over the first ``warmup_epochs`` epochs
    (:func:`~lightning_kd.losses.dkd.dkd_warmup`). Defaults are mdistiller's CIFAR-100 settings. Logs
    ``train/ce_loss``, ``train/tckd_loss`` and ``train/nckd_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        tckd_weight: Weight of TCKD, ``>= 0`` (default 1).
        nckd_weight: Weight of NCKD, ``>= 0`` (default 8; the paper tunes it per teacher, 8 for ResNet32x4).
        temperature: Softmax temperature, ``> 0`` (default 4).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1).
        warmup_epochs: Epochs over which the distillation terms' weight rises to 1 (default 20; 0: none).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> task = DecoupledKD(MLP(num_classes=10), SmallCNN(num_classes=10), nckd_weight=2.0)
        >>> task.criterion
        DKDLoss(tckd_weight=1.0, nckd_weight=2.0, temperature=4.0, ce_weight=1.0)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        tckd_weight: float = DKD_DEFAULTS["tckd_weight"],
        nckd_weight: float = DKD_DEFAULTS["nckd_weight"],
        temperature: float = DKD_DEFAULTS["temperature"],
        ce_weight: float = 1.0,
        warmup_epochs: int = DKD_DEFAULTS["warmup_epochs"],
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
        if not isinstance(hparams["warmup_epochs"], int) or hparams["warmup_epochs"] < 0:
            raise Refusal(f"warmup_epochs must be an integer >= 0, got {hparams['warmup_epochs']}")
        self.criterion = DKDLoss(hparams["tckd_weight"], hparams["nckd_weight"], hparams["temperature"],
                                 hparams["ce_weight"], self.label_smoothing())

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        (teacher,) = self.teacher_outputs(batch)
        logits = self.student(batch["input"])
        warmup = dkd_warmup(self.current_epoch, self.hparams["warmup_epochs"])
        return self.criterion(logits, teacher.logits, batch["target"], warmup), logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        shown = {"tckd_weight": "tckd", "nckd_weight": "nckd", "temperature": "T"}
        own = valued_variant(arguments, DKD_DEFAULTS, shown)
        return join_variants(own, super().run_variant(arguments))
