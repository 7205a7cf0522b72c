"""Attention transfer, AT (Zagoruyko & Komodakis 2017): the student's spatial attention matched to the teacher's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import nn

from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.attention_transfer import AT_DEFAULTS, ATConvention, AttentionTransferLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import LayerMatchingTask


class AttentionTransfer(LayerMatchingTask):
    """``ce_weight * CE + at_weight * sum_stages at(student stage, teacher stage)``.

    See :func:`~lightning_kd.losses.attention_transfer.attention_transfer_loss` for the two conventions
    (``authors_code``: the mean squared difference of the normalised attention maps, weight 1000, as the benchmark
    tables ran it; ``paper``: the norm of the difference, halved). By default every stage of the student is matched
    to the teacher's stage of the same depth, the maps of different resolutions pooled to the smaller; the channel
    counts may differ. Logs ``train/ce_loss`` and ``train/at_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        at_weight: Weight of the attention term, ``>= 0`` (default 1000).
        p: Exponent of the activations in an attention map, ``> 0`` (default 2).
        convention: ``authors_code`` (default) or ``paper``.
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
        >>> task = AttentionTransfer(SmallCNN((8, 16)), SmallCNN((16, 32)))
        >>> [(pair.student_layer, pair.teacher_layer) for pair in task.feature_pairs()]
        [('body.2', 'body.2'), ('body.6', 'body.6')]
    """

    needs_maps = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        at_weight: float = AT_DEFAULTS["at_weight"],
        p: float = AT_DEFAULTS["p"],
        convention: ATConvention = "authors_code",
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
        self.criterion = AttentionTransferLoss(hparams["at_weight"], hparams["p"], hparams["ce_weight"],
                                               hparams["convention"], self.label_smoothing())

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        paper = "paper" if arguments.get("convention") == "paper" else None
        return join_variants(valued_variant(arguments, AT_DEFAULTS, {"at_weight": "at", "p": "p"}), paper,
                             super().run_variant(arguments))
