"""FitNets (Romero et al. 2015): hints from the teacher's middle layer, regressed from the student's guided layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.fitnets import FITNETS_DEFAULTS, FitNetsConvention, HintLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask


def hint_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], batch_norm: bool,
                   relu: bool = True) -> nn.Module:
    """The regressor from the guided layer's ``(C_s, H_s, W_s)`` maps to the hint's ``(C_t, H_t, W_t)``.

    A convolution that also matches the resolution: 3x3 with stride 2 when the student's maps are twice as large,
    a 4x4 transposed convolution with stride 2 when half as large, else a ``(1 + H_s - H_t) x (1 + W_s - W_t)``
    kernel without padding (the paper's fully convolutional regressor); then BatchNorm (``batch_norm``, the
    benchmark codebases' ``ConvReg``) and the ReLU of the hint layer (``relu``; activation boundaries regress
    pre-activations without it). Vectors ``(C,)`` get a linear map and ReLU.

    Raises:
        Refusal: The student's maps are smaller than the teacher's other than by half.

    Example:
        >>> hint_regressor((16, 8, 8), (64, 8, 8), batch_norm=True)[0]
        Conv2d(16, 64, kernel_size=(1, 1), stride=(1, 1))
        >>> hint_regressor((16, 16, 16), (64, 8, 8), batch_norm=False)[0]
        Conv2d(16, 64, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    """
    if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 3):
        raise Refusal(f"FitNets regresses maps onto maps or vectors onto vectors: got the student's "
                      f"{student_shape} and the teacher's {teacher_shape}")
    if len(student_shape) == 1:
        return nn.Sequential(nn.Linear(student_shape[0], teacher_shape[0]), *([nn.ReLU()] if relu else []))
    (s_channels, s_height, s_width), (t_channels, t_height, t_width) = student_shape, teacher_shape
    if (s_height, s_width) == (2 * t_height, 2 * t_width):
        conv: nn.Module = nn.Conv2d(s_channels, t_channels, 3, stride=2, padding=1)
    elif (2 * s_height, 2 * s_width) == (t_height, t_width):
        conv = nn.ConvTranspose2d(s_channels, t_channels, 4, stride=2, padding=1)
    elif s_height >= t_height and s_width >= t_width:
        conv = nn.Conv2d(s_channels, t_channels, (1 + s_height - t_height, 1 + s_width - t_width))
    else:
        raise Refusal(f"FitNets cannot regress the student's {s_height}x{s_width} maps onto the teacher's "
                      f"{t_height}x{t_width} hint: guide a layer of the same, twice or half the resolution")
    return nn.Sequential(conv, *([nn.BatchNorm2d(t_channels)] if batch_norm else []), *([nn.ReLU()] if relu else []))


class FitNets(LayerMatchingTask):
    """``ce_weight * CE + hint_weight * hint``: the guided layer, through a regressor, fits the teacher's hint.

    See :func:`~lightning_kd.losses.fitnets.hint_loss`. By default the middle stage of each network
    (``"stages[1]"``, the benchmark codebases' hint layer 2) and the ``benchmark_code`` convention (mean squared
    error, a convolution + BatchNorm + ReLU regressor, weight 100, one stage with the labels). The paper's
    (``convention: paper``): half the squared norm per sample, a convolution + ReLU regressor, and two stages: the
    hints alone (``ce_weight: 0``: only the layers up to the guided one learn), then
    :class:`~lightning_kd.tasks.VanillaKD` from its weights (``student_ckpt``; the regressor is dropped). The
    regressor is a trainable part of this task, saved in its checkpoints. Logs ``train/ce_loss`` and
    ``train/hint_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        hint_weight: Weight of the hint term, ``>= 0`` (default 100).
        convention: ``benchmark_code`` (default) or ``paper``.
        student_layers: The student's guided layer(s) (default ``"stages[1]"``).
        teacher_layers: The teacher's hint layer(s), as many (default ``"stages[1]"``).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1; 0 for the paper's first stage).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> task = FitNets(SmallCNN((8, 16)), SmallCNN((16, 32)))
        >>> task.build_projectors((1, 8, 8))
        >>> [type(layer).__name__ for layer in task.projectors[0]], task.projectors[0][0].kernel_size
        (['Conv2d', 'BatchNorm2d', 'ReLU'], (1, 1))
    """

    compares_across_widths = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        hint_weight: float = FITNETS_DEFAULTS["hint_weight"],
        convention: FitNetsConvention = "benchmark_code",
        student_layers: LayerSpec = "stages[1]",
        teacher_layers: LayerSpec = "stages[1]",
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
        self.criterion = HintLoss(hparams["hint_weight"], hparams["ce_weight"], hparams["convention"],
                                  self.label_smoothing())

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        return hint_regressor(student_shape, teacher_shape, batch_norm=self.hparams["convention"] != "paper")

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        paper = "paper" if arguments.get("convention") == "paper" else None
        hints_only = "hints-only" if arguments.get("ce_weight") == 0 else None
        return join_variants(valued_variant(arguments, FITNETS_DEFAULTS, {"hint_weight": "hint"}), paper, hints_only,
                             super().run_variant(arguments))
