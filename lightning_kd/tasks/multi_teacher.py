"""Multi-teacher KD: one student distilled from K frozen teachers, weighted per batch or per sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.losses import (
    DEFAULT_ALPHA,
    DEFAULT_SMOOTHING_CONVENTION,
    DEFAULT_TEMPERATURE,
    SmoothingConvention,
)
from lightning_kd.losses.multi_teacher import (
    MultiTeacherConvention,
    MultiTeacherKDLoss,
    MultiTeacherReduction,
    MultiTeacherWeighting,
    check_fixed_weights,
)
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask
from lightning_kd.teachers import CheckpointSpec, TeacherSpec


class MultiTeacherKD(DistillationTask):
    """``(1 - alpha) * CE(zs, y) + alpha * T^2 * D``, ``D`` the KD term against K weighted teachers.

    ``weighting`` names how the teachers are weighted: ``"fixed"`` (``teacher_weights``, normalised;
    equal by default), ``"ebkd"`` (per sample, by each teacher's entropy), ``"ca-mkd"`` (per sample, by
    each teacher's cross-entropy on the label) or ``"ae-kd"`` (per batch, the min-norm point of the
    per-teacher KD gradients). ``reduction`` is ``"targets"`` (distil against the weighted average
    target) or ``"terms"`` (weighted average of per-teacher KD terms): the same gradient, values
    that differ by the teachers' disagreement (see :mod:`lightning_kd.losses.multi_teacher`).

    Teachers are given as for every distillation task (networks, checkpoints or both, as lists), of any
    architectures; each is frozen, in eval mode and out of DDP. Besides the student's metrics and each
    teacher's accuracy and agreement (:class:`~lightning_kd.tasks.DistillationTask`), it logs each
    teacher's mean weight per epoch (``train/<role>/weight``); the run summary shows each teacher's mean
    weight over the fit (a resumed fit: since the resume) and the teachers' ensemble accuracy
    (``val/teachers_ensemble_acc``).

    Args:
        student: The network to train.
        teacher: The teacher networks (a list; optional for checkpoints written by a CLI run).
        teacher_ckpt: One checkpoint path per teacher (``null`` for a teacher given only as a network).
        weighting: ``"fixed"``, ``"ebkd"``, ``"ca-mkd"`` or ``"ae-kd"``.
        reduction: ``"targets"`` or ``"terms"``.
        teacher_weights: ``weighting="fixed"`` only: one weight per teacher, ``>= 0`` (normalised).
        alpha: Weight of the distillation term, in ``[0, 1]`` (Hinton's convention).
        temperature: Softmax temperature, ``> 0``.
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        convention: ``"paper"`` or ``"authors_code"`` (with ``reduction="terms"``: CA-MKD's code's KD term for
            ``"ca-mkd"`` and ``"ebkd"``, AE-KD's code's weights for ``"ae-kd"``; see
            :mod:`lightning_kd.losses.multi_teacher`).
        inherit_layers: Layers of the first teacher copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import MLP, SmallCNN
        >>> task = MultiTeacherKD(MLP(num_classes=10), [SmallCNN(num_classes=10), MLP(num_classes=10)],
        ...                       weighting="ca-mkd")
        >>> list(task.teacher_networks())
        ['teacher', 'teacher_2']
    """

    max_teachers = None

    def __init__(
        self,
        student: nn.Module,
        teacher: TeacherSpec = None,
        teacher_ckpt: CheckpointSpec = None,
        weighting: MultiTeacherWeighting = "fixed",
        reduction: MultiTeacherReduction = "targets",
        teacher_weights: list[float] | None = None,
        alpha: float = DEFAULT_ALPHA,
        temperature: float = DEFAULT_TEMPERATURE,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        student_ckpt: str | Path | None = None,
        convention: MultiTeacherConvention = "paper",
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(student, teacher, teacher_ckpt, optimizer, lr_scheduler, student_ckpt, inherit_layers)

    def configure_losses(self) -> None:
        hparams = self.hparams
        self.criterion = MultiTeacherKDLoss(hparams["weighting"], hparams["reduction"], hparams["alpha"],
                                            hparams["temperature"], hparams["teacher_weights"], self.label_smoothing(),
                                            hparams.get("convention", "paper"))

    def configure_models(  # type: ignore[override]
        self, student: nn.Module | None, teacher: TeacherSpec, teacher_ckpt: CheckpointSpec,
        student_ckpt: str | Path | None = None, inherit_layers: InheritSpec = None,
    ) -> None:
        super().configure_models(student, teacher, teacher_ckpt, student_ckpt, inherit_layers)
        check_fixed_weights(self.hparams["teacher_weights"], len(self.teachers))  # one per teacher, now they are known
        # each teacher's weight averaged over every training sample of the fit (synced under DDP)
        self.weight_means = nn.ModuleDict({role: torchmetrics.MeanMetric() for role in self.teachers})

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        outputs = self.teacher_outputs(batch)
        teacher_logits = torch.stack([output.logits for output in outputs])
        logits = self.student(batch["input"])
        weights = self.criterion.weights(logits, teacher_logits, batch["target"])
        for k, role in enumerate(self.teachers):
            self.weight_means[role].update(weights[:, k])
        self.log_epoch_means({f"train/{role}/weight": weights[:, k].mean() for k, role in enumerate(self.teachers)},
                             len(weights))
        return self.criterion(logits, teacher_logits, batch["target"], weights), logits

    def summary_columns(self) -> dict[str, dict[str, float]]:
        if not self.weight_means or not self.weight_means[next(iter(self.teachers))].update_called:
            return {}
        return {role: {"mean weight": float(metric.compute())} for role, metric in self.weight_means.items()}

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        temperature, alpha = arguments.get("temperature", DEFAULT_TEMPERATURE), arguments.get("alpha", DEFAULT_ALPHA)
        weighting, reduction = arguments.get("weighting", "fixed"), arguments.get("reduction", "targets")
        own = f"{weighting}-{reduction}-T{temperature:g}-alpha{alpha:g}"
        if arguments.get("convention", "paper") != "paper":
            own += f"-{arguments['convention']}"
        return join_variants(own, super().run_variant(arguments))
