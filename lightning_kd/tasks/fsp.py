"""FSP, the flow of solution procedure (Yim et al. 2017): the Gram matrices between consecutive layers, matched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.fsp import FSP_DEFAULTS, FSPConvention, FSPLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask


class FSP(LayerMatchingTask):
    """``ce_weight * CE + fsp_weight * sum_i d(G_s(i, i+1), G_t(i, i+1))`` over consecutive tapped layers.

    See :mod:`lightning_kd.losses.fsp` for the matrices and the two conventions. The paper's protocol is two runs:
    this task with ``ce_weight: 0`` (the FSP term alone trains the student's layers up to the deepest tapped one),
    then any task (``Classifier`` as the paper and RepDistiller, or ``VanillaKD``) starting from that run's
    checkpoint through ``student_ckpt``. By default the stem and every stage of both networks, which must have the
    same widths there (ResNet56 -> ResNet20, ResNet32x4 -> ResNet8x4, WRN-40-2 -> WRN-16-2, VGG13 -> VGG8). Logs
    ``train/ce_loss`` and ``train/fsp_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        fsp_weight: Weight of the FSP term, ``>= 0`` (default 1, RepDistiller's first stage).
        convention: ``benchmark_code`` (default) or ``paper``.
        student_layers: The student's maps in depth order, at least 2 (default ``["stem", "stages"]``).
        teacher_layers: The teacher's, as many, of the same widths (default ``["stem", "stages"]``).
        ce_weight: Weight of the label cross-entropy, ``>= 0`` (default 1; 0 for the paper's first stage).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from (see :class:`~lightning_kd.tasks.DistillationTask`).
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import create_model
        >>> task = FSP(create_model("resnet20", num_classes=10), create_model("resnet56", num_classes=10))
        >>> [(pair.student_layer, pair.teacher_layer) for pair in task.feature_pairs()][:2]
        [('stem', 'stem'), ('stages.0', 'stages.0')]
    """

    needs_maps = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        fsp_weight: float = FSP_DEFAULTS["fsp_weight"],
        convention: FSPConvention = "benchmark_code",
        student_layers: LayerSpec = ("stem", "stages"),
        teacher_layers: LayerSpec = ("stem", "stages"),
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
        self.criterion = FSPLoss(hparams["fsp_weight"], hparams["ce_weight"], hparams["convention"],
                                 self.label_smoothing())

    def check_pair(self, index: int, pair: FeaturePair, projected: Tensor, teacher: Tensor) -> None:
        super().check_pair(index, pair, projected, teacher)
        if len(self.feature_pairs()) < 2:
            raise Refusal(f"FSP relates consecutive layers: name at least 2 in student_layers and teacher_layers, "
                          f"got {pair.student_layer!r} -> {pair.teacher_layer!r} alone")
        if projected.shape[1] != teacher.shape[1]:
            raise Refusal(f"{self.pair_name(index)}: the student's layer has {projected.shape[1]} channels and the "
                          f"teacher's {teacher.shape[1]}; FSP compares matrices of channels, so tap layers of equal "
                          "widths (a pair such as resnet56 -> resnet20 or resnet32x4 -> resnet8x4)")

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        paper = "paper" if arguments.get("convention") == "paper" else None
        initialisation = "init" if arguments.get("ce_weight") == 0 else None  # the paper's first run
        return join_variants(valued_variant(arguments, FSP_DEFAULTS, {"fsp_weight": "fsp"}), paper, initialisation,
                             super().run_variant(arguments))
