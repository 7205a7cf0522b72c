"""Variational information distillation, VID (Ahn et al. 2019): maximise a variational bound on the mutual
information between the teacher's and the student's features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.validation import check_positive
from lightning_kd.losses.vid import VID_DEFAULTS, VIDConvention, VIDLoss, initial_raw_variance, vid_variance
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask


class VIDRegressor(nn.Module):
    """A stage's Gaussian: the mean from the student's map (pooled to the teacher's size where larger; 1x1
    convolutions ``C_s -> C_t -> C_t -> C_t`` with ReLUs between, no bias) and a learned variance per channel.

    Example:
        >>> VIDRegressor(8, 16, (4, 4), 5.0)(torch.zeros(2, 8, 8, 8)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_size: tuple[int, int],
                 initial_variance: float) -> None:
        super().__init__()
        self.teacher_size = teacher_size
        self.mean = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.ReLU(),
                                  nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False), nn.ReLU(),
                                  nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False))
        self.raw_variance = nn.Parameter(torch.full((teacher_channels,), initial_raw_variance(initial_variance)))

    def forward(self, features: Tensor) -> Tensor:
        if features.shape[2] > self.teacher_size[0] or features.shape[3] > self.teacher_size[1]:
            features = F.adaptive_avg_pool2d(features, (min(features.shape[2], self.teacher_size[0]),
                                                        min(features.shape[3], self.teacher_size[1])))
        return self.mean(features)

    def variance(self) -> Tensor:
        """``(C_t,)``: ``softplus(raw) + eps``."""
        return vid_variance(self.raw_variance)


class VID(LayerMatchingTask):
    """``ce_weight * CE + vid_weight * sum_stages NLL(teacher map | regressed mean, learned variance)``.

    See :mod:`lightning_kd.losses.vid` for the term and its two reductions (``authors_code``: the mean over
    elements, weight 1, as the benchmark tables ran it; ``paper``: the sum per sample). Each stage's regressor and
    variances are trained with the student (the task's projectors). By default every stage of the student against
    the teacher's of the same depth. Logs ``train/ce_loss`` and ``train/vid_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        vid_weight: Weight of the VID term, ``>= 0`` (default 1).
        convention: ``authors_code`` (default) or ``paper``.
        initial_variance: Every channel's variance at the start, ``> 0`` (default 5, the authors').
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
        >>> task = VID(SmallCNN((8, 16)), SmallCNN((16, 32)))
        >>> task.build_projectors((1, 8, 8))
        >>> [round(float(p.variance()[0]), 4) for p in task.projectors]
        [5.0, 5.0]
    """

    needs_maps = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        vid_weight: float = VID_DEFAULTS["vid_weight"],
        convention: VIDConvention = "authors_code",
        initial_variance: float = VID_DEFAULTS["initial_variance"],
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
        hparams = self.hparams
        check_positive(hparams["initial_variance"], "initial_variance")
        self.criterion = VIDLoss(hparams["vid_weight"], hparams["ce_weight"], hparams["convention"],
                                 self.label_smoothing())

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise Refusal(f"{self.pair_name(index)}: VID regresses feature maps (C, H, W), got the student's "
                          f"{student_shape} and the teacher's {teacher_shape}; tap convolutional stages")
        return VIDRegressor(student_shape[0], teacher_shape[0], (teacher_shape[1], teacher_shape[2]),
                            self.hparams["initial_variance"])

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        means, teacher, student_out, _ = self.matched_features(batch)
        teacher = [t.to(m.dtype) for m, t in zip(means, teacher, strict=True)]
        variances = [projector.variance() for projector in self.projectors]
        return self.criterion(student_out.logits, batch["target"], means, teacher, variances), student_out.logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        paper = "paper" if arguments.get("convention") == "paper" else None
        return join_variants(valued_variant(arguments, VID_DEFAULTS, {"vid_weight": "vid"}), paper,
                             super().run_variant(arguments))
