"""A comprehensive overhaul of feature distillation, OFD (Heo et al. 2019): pre-ReLU features, a partial L2 distance
with margins from the teacher's BatchNorms."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.ofd import OFD_DEFAULTS, ofd_loss, ofd_margin
from lightning_kd.losses.validation import check_weight
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec, preact_batchnorm
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask


class OFDConnector(nn.Module):
    """The student's map to the teacher's channels (1x1 convolution without bias, BatchNorm; the authors'
    initialisation), with the teacher channels' margins (a buffer, saved with the task).

    Example:
        >>> connector = OFDConnector(8, 16)
        >>> connector(torch.zeros(2, 8, 4, 4)).shape, connector.margin.shape
        (torch.Size([2, 16, 4, 4]), torch.Size([16]))
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)
        nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / teacher_channels))  # n = k * k * out channels
        self.register_buffer("margin", torch.zeros(teacher_channels))

    def forward(self, features: Tensor) -> Tensor:
        return self.bn(self.conv(features))


class OFD(LayerMatchingTask):
    """``ce_weight * CE + ofd_weight * sum_i partial_L2(connector_i(s_i), t_i) / 2^(n - 1 - i)``, on features before
    their last ReLU.

    See :mod:`lightning_kd.losses.ofd`. Every stage of both networks before its ReLU (``"preact_stages"``: the zoo's
    CIFAR ResNets, WRNs, VGGs and ShuffleNetV2), each teacher channel's margin computed once from the BatchNorm
    before its ReLU when the task is set up (kept in its checkpoints). The connectors are trained with the student. Logs
    ``train/ce_loss`` and ``train/ofd_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        ofd_weight: Weight of the distillation term, ``>= 0`` (default 0.001: the authors' sum divided by 1000).
        student_layers: The student's maps before their ReLU (default ``"preact_stages"``).
        teacher_layers: The teacher's, as many; each must follow a BatchNorm (default ``"preact_stages"``).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import create_model
        >>> task = OFD(create_model("resnet20", num_classes=10), create_model("resnet56", num_classes=10))
        >>> task.build_projectors((3, 32, 32))
        >>> [round(float(c.margin[0]), 4) for c in task.projectors]  # BatchNorm at its initial weight 1, bias 0
        [-0.7979, -0.7979, -0.7979]
    """

    needs_maps = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        ofd_weight: float = OFD_DEFAULTS["ofd_weight"],
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
        check_weight(self.hparams["ofd_weight"], "ofd_weight")
        check_weight(self.hparams["ce_weight"], "ce_weight")

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise Refusal(f"{self.pair_name(index)}: OFD compares feature maps (C, H, W), got the student's "
                          f"{student_shape} and the teacher's {teacher_shape}; tap convolutional stages")
        return OFDConnector(student_shape[0], teacher_shape[0])

    def check_pair(self, index: int, pair: FeaturePair, projected: Tensor, teacher: Tensor) -> None:
        pass  # the connector maps to the teacher's channels; the teacher's map is pooled to the student's size

    def build_projectors(self, input_shape: tuple[int, ...]) -> None:
        super().build_projectors(input_shape)
        for connector, pair in zip(self.projectors, self.feature_pairs(), strict=True):
            batchnorm = preact_batchnorm(self.teacher, pair.teacher_layer)
            if batchnorm.num_features != connector.margin.numel():
                raise Refusal(f"OFD: the BatchNorm before the teacher's {pair.teacher_layer!r} has "
                              f"{batchnorm.num_features} channels, the layer {connector.margin.numel()}")
            connector.margin.copy_(ofd_margin(batchnorm.weight, batchnorm.bias))

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        connected, teacher, student_out, _ = self.matched_features(batch)
        teacher = [t.to(s.dtype) for s, t in zip(connected, teacher, strict=True)]
        margins = [connector.margin for connector in self.projectors]
        losses = ofd_loss(student_out.logits, batch["target"], connected, teacher, margins,
                          self.hparams["ofd_weight"], self.hparams["ce_weight"], self.label_smoothing())
        return losses, student_out.logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        return join_variants(valued_variant(arguments, OFD_DEFAULTS, {"ofd_weight": "ofd"}),
                             super().run_variant(arguments))
