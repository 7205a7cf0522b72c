"""Correlation congruence, CC (Peng et al. 2019): the correlations between a batch's samples, kept."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.correlation_congruence import CC_DEFAULTS, CCConvention, CorrelationCongruenceLoss
from lightning_kd.losses.validation import check_positive
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask, PairEmbeddings


class CorrelationCongruence(LayerMatchingTask):
    """``ce_weight * CE + cc_weight * cc`` on trained embeddings of both networks' features.

    See :mod:`lightning_kd.losses.correlation_congruence` for the two conventions (``authors_code``: the code the
    authors shared with RepDistiller, weight 0.02; ``paper``: Taylor-expanded Gaussian RBF correlation matrices).
    Both embedding maps (linear, to ``dim``) are trained with the student; the teacher never is. A batch needs 2
    samples. Logs ``train/ce_loss`` and ``train/cc_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        cc_weight: Weight of the correlation term, ``>= 0`` (default 0.02).
        convention: ``authors_code`` (default) or ``paper``.
        dim: Width of the embeddings (default 128).
        gamma: The RBF's ``gamma`` (``paper``; default 0.4).
        order: The Taylor expansion's order (``paper``; default 2).
        student_layers: The student's layers (default ``"penultimate"``).
        teacher_layers: The teacher's, as many (default ``"penultimate"``).
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
        >>> task = CorrelationCongruence(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)), dim=4)
        >>> task.build_projectors((1, 8, 8))
        >>> task.projectors[0].teacher
        Linear(in_features=16, out_features=4, bias=True)
    """

    projector = "linear"
    needs_samples = 2

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        cc_weight: float = CC_DEFAULTS["cc_weight"],
        convention: CCConvention = "authors_code",
        dim: int = CC_DEFAULTS["dim"],
        gamma: float = CC_DEFAULTS["gamma"],
        order: int = CC_DEFAULTS["order"],
        student_layers: LayerSpec = "penultimate",
        teacher_layers: LayerSpec = "penultimate",
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
        check_positive(hparams["dim"], "dim (the embeddings' width)")
        self.criterion = CorrelationCongruenceLoss(hparams["cc_weight"], hparams["ce_weight"], hparams["convention"],
                                                   hparams["gamma"], hparams["order"], self.label_smoothing())

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        return PairEmbeddings(math.prod(student_shape), math.prod(teacher_shape), self.hparams["dim"])

    def teacher_side(self, index: int, features: Tensor) -> Tensor:
        return self.projectors[index].embed_teacher(features)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        paper = "paper" if arguments.get("convention") == "paper" else None
        return join_variants(valued_variant(arguments, CC_DEFAULTS, {"cc_weight": "cc"}), paper,
                             super().run_variant(arguments))
