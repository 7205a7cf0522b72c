"""Knowledge review, ReviewKD (Chen et al. 2021): the student's stages fused deep to shallow by attention, each fused
map matched to the teacher's stage before its last ReLU."""

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
from lightning_kd.losses.review_kd import REVIEW_DEFAULTS, ReviewConvention, review_kd_loss, review_warmup
from lightning_kd.losses.validation import check_choice, check_weight
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask


def _as_map(features: Tensor) -> Tensor:
    """Pooled ``(B, C)`` features as a ``(B, C, 1, 1)`` map; maps as they are."""
    return features[:, :, None, None] if features.ndim == 2 else features


class AttentionFusion(nn.Module):
    """One level of the review (the authors' ABF): the student's map to ``mid`` channels (1x1 convolution, BatchNorm),
    fused with the deeper level's (upsampled, nearest) by two attention maps from a 1x1 convolution and a sigmoid,
    resized to the teacher's resolution, then to the teacher's channels (3x3 convolution, BatchNorm).

    Example:
        >>> fusion = AttentionFusion(8, 16, 12, fuse=True)
        >>> out, residual = fusion(torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, 2, 2), (4, 4))
        >>> tuple(out.shape), tuple(residual.shape)
        ((2, 12, 4, 4), (2, 16, 4, 4))
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)  # the authors' initialisation
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, deeper: Tensor | None = None,
                out_size: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor]:
        """``(output, residual)``: the map matched to the teacher's (at ``out_size``, default the student's), and
        the fused one the next level reads."""
        x = self.conv1(_as_map(x))
        if self.attention is not None and deeper is not None:
            deeper = F.interpolate(deeper, x.shape[2:], mode="nearest")
            weights = self.attention(torch.cat([x, deeper], dim=1))
            x = x * weights[:, :1] + deeper * weights[:, 1:]
        residual = x
        if out_size is not None and tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), residual


class ReviewKD(LayerMatchingTask):
    """``ce_weight * CE + w(e) * review_weight * sum_i HCL(fused_i, teacher_i)``: knowledge review.

    The student's stages and pooled features are reviewed deepest first: each level's attention fusion
    (:class:`AttentionFusion`, trained with the student) combines that level's map with the fused deeper one, and
    its output is matched to the teacher's stage *before its last ReLU* (and the teacher's pooled features) by the
    hierarchical context loss (:mod:`lightning_kd.losses.review_kd`). By default the stages and pooled features of
    both, the teacher's stages as ``preact_stages`` (the zoo's CIFAR ResNets, WRNs, VGGs and ShuffleNetV2 name them),
    as both codes do. ``w(e)`` warms the term up over ``warmup_epochs``; the two conventions differ only there
    (:func:`~lightning_kd.losses.review_kd.review_warmup`). Logs ``train/ce_loss`` and ``train/review_loss``
    (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        review_weight: Weight of the review term, ``>= 0`` (default 5).
        warmup_epochs: Epochs over which the term's weight rises to ``review_weight`` (default 20; 0: none).
        convention: ``benchmark_code`` (default, mdistiller) or ``authors_code``.
        student_layers: The student's maps, shallow to deep, and its pooled features (default
            ``["stages", "penultimate"]``).
        teacher_layers: The teacher's, as many (default ``["preact_stages", "penultimate"]``).
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
        >>> task = ReviewKD(create_model("resnet8x4", num_classes=100), create_model("resnet32x4", num_classes=100))
        >>> task.build_projectors((3, 32, 32))
        >>> [type(f.attention).__name__ for f in task.projectors]  # the deepest level fuses nothing
        ['Sequential', 'Sequential', 'Sequential', 'NoneType']
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        review_weight: float = REVIEW_DEFAULTS["review_weight"],
        warmup_epochs: int = REVIEW_DEFAULTS["warmup_epochs"],
        convention: ReviewConvention = "benchmark_code",
        student_layers: LayerSpec = ("stages", "penultimate"),
        teacher_layers: LayerSpec = ("preact_stages", "penultimate"),
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
        check_weight(hparams["review_weight"], "review_weight")
        check_weight(hparams["ce_weight"], "ce_weight")
        check_choice("ReviewKD convention", hparams["convention"], ("benchmark_code", "authors_code"))
        if not isinstance(hparams["warmup_epochs"], int) or hparams["warmup_epochs"] < 0:
            raise Refusal(f"warmup_epochs must be an integer >= 0, got {hparams['warmup_epochs']}")

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        for side, shape in (("student's", student_shape), ("teacher's", teacher_shape)):
            if len(shape) not in (1, 3):
                raise Refusal(f"{self.pair_name(index)}: ReviewKD reviews feature maps (C, H, W) and pooled features "
                              f"(C,), got the {side} {shape}")
        deepest = self.feature_shapes[-1][0]
        mid = min(512, deepest[0])  # the authors' width of the fused maps
        return AttentionFusion(student_shape[0], mid, teacher_shape[0], fuse=index < len(self.feature_shapes) - 1)

    def check_pair(self, index: int, pair: FeaturePair, projected: Tensor, teacher: Tensor) -> None:
        pass  # the fusion runs deep to shallow over every level: training_losses checks the fused maps

    def fused_features(self, student: list[Tensor], teacher: list[Tensor]) -> list[Tensor]:
        """The review: the student's levels, deepest first, through their fusions; one map per teacher level."""
        fused: list[Tensor] = [torch.empty(0)] * len(student)
        deeper = None
        for index in reversed(range(len(student))):
            out_size = tuple(_as_map(teacher[index]).shape[2:])
            fused[index], deeper = self.projectors[index](student[index], deeper, out_size)
        return fused

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        student_out, teacher_out = self.tapped(batch)
        student, teacher = self.raw_features(student_out, teacher_out)
        fused = self.fused_features(student, teacher)
        hparams = self.hparams
        warmup = review_warmup(self.current_epoch, hparams["warmup_epochs"], hparams["convention"])
        teacher_maps = [_as_map(t).to(f.dtype) for f, t in zip(fused, teacher, strict=True)]
        losses = review_kd_loss(student_out.logits, batch["target"], fused, teacher_maps, hparams["review_weight"],
                                hparams["ce_weight"], warmup, self.label_smoothing())
        return losses, student_out.logits

    def build_projectors(self, input_shape: tuple[int, ...]) -> None:
        super().build_projectors(input_shape)
        # one forward of the review on zeros: shapes that cannot meet are refused before training
        parameter = next(self.student.parameters())
        dummy = {"input": torch.zeros(2, *input_shape, device=parameter.device, dtype=parameter.dtype)}
        modes = [(module, module.training) for module in (self.student, self.projectors)]
        for module, _ in modes:
            module.eval()
        try:
            with torch.no_grad():
                student, teacher = self.raw_features(*self.tapped(dummy))
                fused = self.fused_features(student, teacher)
                for index, (f, t) in enumerate(zip(fused, teacher, strict=True)):
                    if f.shape[1:] != _as_map(t).shape[1:]:
                        raise Refusal(f"{self.pair_name(index)}: the fused map {tuple(f.shape[1:])} cannot match the "
                                      f"teacher's {tuple(_as_map(t).shape[1:])}")
        finally:
            for module, training in modes:
                module.train(training)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        authors = "authors" if arguments.get("convention") == "authors_code" else None
        return join_variants(valued_variant(arguments, REVIEW_DEFAULTS, {"review_weight": "review"}), authors,
                             super().run_variant(arguments))
