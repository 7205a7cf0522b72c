"""Activation boundaries, AB (Heo et al. 2019): the student initialised so that its neurons fire where the
teacher's do, then trained on the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.activation_boundaries import AB_DEFAULTS, ActivationBoundariesLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask
from lightning_kd.tasks.fitnets import hint_regressor


class ActivationBoundaries(LayerMatchingTask):
    """``ce_weight * CE + ab_weight * ab``: the alternative L2 between the student's connected pre-ReLU stages and
    the teacher's (:mod:`lightning_kd.losses.activation_boundaries`).

    The paper's protocol is two runs: this task with ``ce_weight: 0`` (the boundary term alone trains the student's
    layers up to its deepest tapped stage and the connectors; RepDistiller's 30 initialisation epochs), then a
    ``Classifier`` from that run's checkpoint (``net_ckpt``), as RepDistiller's AB runs do. A connector (the benchmark
    codebases' ``ConvReg`` without its ReLU: a convolution matching the resolution, BatchNorm) maps a student stage
    to the teacher's where their channels or sizes differ; none where they agree. By default every stage of both
    networks before its ReLU (``"preact_stages"``). Logs ``train/ce_loss`` and ``train/ab_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        ab_weight: Weight of the boundary term, ``>= 0`` (default 1).
        margin: The margin of the alternative L2, ``> 0`` (default 1, the authors').
        student_layers: The student's pre-ReLU maps (default ``"preact_stages"``).
        teacher_layers: The teacher's, as many (default ``"preact_stages"``).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1; 0 for the paper's initialisation).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import create_model
        >>> task = ActivationBoundaries(create_model("resnet8x4", num_classes=100),
        ...                             create_model("resnet32x4", num_classes=100))
        >>> task.build_projectors((3, 32, 32))
        >>> [type(connector).__name__ for connector in task.projectors]  # equal widths and sizes: no connector
        ['Identity', 'Identity', 'Identity']
    """

    needs_maps = True
    compares_across_widths = False  # connected, the student's maps have the teacher's shape

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        ab_weight: float = AB_DEFAULTS["ab_weight"],
        margin: float = AB_DEFAULTS["margin"],
        student_layers: LayerSpec = "preact_stages",
        teacher_layers: LayerSpec = "preact_stages",
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
        self.criterion = ActivationBoundariesLoss(hparams["ab_weight"], hparams["ce_weight"], hparams["margin"],
                                                  self.label_smoothing())

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise Refusal(f"{self.pair_name(index)}: activation boundaries compares feature maps (C, H, W), got the "
                          f"student's {student_shape} and the teacher's {teacher_shape}; tap convolutional stages")
        if student_shape[:2] == teacher_shape[:2]:  # as the authors: no connector where channels and height agree
            return nn.Identity()
        return hint_regressor(student_shape, teacher_shape, batch_norm=True, relu=False)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        initialisation = "init" if arguments.get("ce_weight") == 0 else None
        return join_variants(valued_variant(arguments, AB_DEFAULTS, {"ab_weight": "ab", "margin": "margin"}),
                             initialisation, super().run_variant(arguments))
