"""Factor transfer, FT (Kim et al. 2018): a paraphraser of the teacher's features, trained first, and a
translator of the student's, matched."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.checkpoints import CheckpointError, read_checkpoint
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.losses.factor_transfer import (
    FT_DEFAULTS,
    FactorTransferLoss,
    FTConvention,
    paraphraser_reconstruction_loss,
)
from lightning_kd.losses.validation import check_choice, check_positive
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.models.taps import LayerSpec, layer_list
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeaturePair, LayerMatchingTask

FTPhase = Literal["paraphraser", "transfer"]
FT_PHASES: tuple[str, ...] = ("paraphraser", "transfer")


def _convolutions(widths: list[int], transposed: bool = False, batch_norm: bool = False) -> nn.Sequential:
    """3x3 convolutions (stride 1, padding 1) between consecutive ``widths``, each followed by a LeakyReLU(0.1)."""
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers.append((nn.ConvTranspose2d if transposed else nn.Conv2d)(width_in, width_out, 3, 1, 1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width_out))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class FactorModules(nn.Module):
    """FT's two maps for one pair of layers: the student's translator (three convolutions with BatchNorm,
    ``C_s -> C_s -> K -> K``) and the teacher's paraphraser (an encoder ``C_t -> C_t -> K -> K`` and a transposed
    decoder back, no BatchNorm), ``K = rate * C_t``: the authors' modules. Called on the student's features.

    Example:
        >>> modules = FactorModules(8, 16, 0.5)
        >>> modules(torch.zeros(2, 8, 4, 4)).shape, modules.encode_teacher(torch.zeros(2, 16, 4, 4)).shape
        (torch.Size([2, 8, 4, 4]), torch.Size([2, 8, 4, 4]))
    """

    def __init__(self, student_channels: int, teacher_channels: int, rate: float) -> None:
        super().__init__()
        factor = max(1, int(teacher_channels * rate))
        self.translator = _convolutions([student_channels, student_channels, factor, factor], batch_norm=True)
        self.paraphraser_encoder = _convolutions([teacher_channels, teacher_channels, factor, factor])
        self.paraphraser_decoder = _convolutions([factor, factor, teacher_channels, teacher_channels], transposed=True)

    def forward(self, features: Tensor) -> Tensor:
        return self.translator(features)

    def encode_teacher(self, features: Tensor) -> Tensor:
        """The teacher's factor: the paraphraser's code of its map."""
        return self.paraphraser_encoder(features)

    def reconstruct_teacher(self, features: Tensor) -> Tensor:
        """The paraphraser's reconstruction of the teacher's map (what its own training fits)."""
        return self.paraphraser_decoder(self.paraphraser_encoder(features))

    def paraphraser_parameters(self) -> list[nn.Parameter]:
        return [*self.paraphraser_encoder.parameters(), *self.paraphraser_decoder.parameters()]


class FactorTransfer(LayerMatchingTask):
    """Two runs, as the paper and RepDistiller train: ``phase: paraphraser`` fits the paraphraser to reconstruct the
    teacher's features (the student is not trained: its metrics are its initial weights'), then ``phase: transfer``
    trains the student and its translator on ``ce_weight * CE + ft_weight * ft`` with that paraphraser frozen,
    read from the first run's checkpoint (``paraphraser_ckpt``).

    See :mod:`lightning_kd.losses.factor_transfer` for the term and its two conventions. By default the last stage
    of both networks. Logs ``train/reconstruction_loss`` (paraphraser phase), or ``train/ce_loss`` and
    ``train/ft_loss`` (unweighted).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        phase: ``paraphraser`` (the first run) or ``transfer`` (default).
        paraphraser_ckpt: A ``paraphraser`` run's checkpoint (needed by ``transfer``).
        ft_weight: Weight of the factor term, ``>= 0`` (default 200).
        convention: ``benchmark_code`` (default) or ``paper``.
        rate: The factor's width as a fraction of the teacher's channels, ``> 0`` (default 0.5, the authors').
        student_layers: The student's map (default ``"stages[-1]"``).
        teacher_layers: The teacher's (default ``"stages[-1]"``).
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
        >>> task = FactorTransfer(SmallCNN((8, 16)), SmallCNN((16, 32)), phase="paraphraser")
        >>> task.build_projectors((1, 8, 8))
        >>> task.projectors[0].paraphraser_encoder[0]
        Conv2d(32, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    """

    needs_maps = True
    starting_weights = ("student_ckpt", "paraphraser_ckpt")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        phase: FTPhase = "transfer",
        paraphraser_ckpt: str | Path | None = None,
        ft_weight: float = FT_DEFAULTS["ft_weight"],
        convention: FTConvention = "benchmark_code",
        rate: float = 0.5,
        student_layers: LayerSpec = "stages[-1]",
        teacher_layers: LayerSpec = "stages[-1]",
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
        check_choice("factor transfer phase", hparams["phase"], FT_PHASES)
        check_positive(hparams["rate"], "rate (the factor's width over the teacher's)")
        self.criterion = FactorTransferLoss(hparams["ft_weight"], hparams["ce_weight"], hparams["convention"],
                                            self.label_smoothing())

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise Refusal(f"{self.pair_name(index)}: factor transfer encodes feature maps (C, H, W), got the "
                          f"student's {student_shape} and the teacher's {teacher_shape}; tap convolutional stages")
        modules = FactorModules(student_shape[0], teacher_shape[0], self.hparams["rate"])
        if self.hparams["phase"] == "transfer":  # the paraphraser is the teacher's side: frozen, never trained
            for parameter in modules.paraphraser_parameters():
                parameter.requires_grad_(False)
        return modules

    def build_projectors(self, input_shape: tuple[int, ...]) -> None:
        super().build_projectors(input_shape)
        if self.hparams["phase"] == "transfer" and self.hparams["paraphraser_ckpt"] is not None:
            self.load_paraphrasers(self.hparams["paraphraser_ckpt"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._paraphraser_loaded = True  # a transfer run's checkpoint holds its paraphraser

    def on_train_start(self) -> None:
        super().on_train_start()
        # here, not in setup: a resumed fit restores its checkpoint (and the paraphraser in it) after setting up
        if self.hparams["phase"] == "transfer" and not getattr(self, "_paraphraser_loaded", False):
            raise Refusal("FactorTransfer transfers through a paraphraser trained first: run it with phase: "
                          "paraphraser, then pass that run's checkpoint as paraphraser_ckpt")

    def load_paraphrasers(self, path: str | Path) -> None:
        """Copy the paraphrasers of a ``paraphraser`` run's checkpoint into this task's (frozen) ones.

        Raises:
            CheckpointError: The file is not such a checkpoint, or its paraphrasers were trained on other layers.
        """
        checkpoint = read_checkpoint(path)
        hparams = checkpoint.get("hyper_parameters", {})
        if hparams.get("phase") != "paraphraser":
            raise CheckpointError(f"paraphraser_ckpt {path} is not a FactorTransfer run with phase: paraphraser")
        own_layers, own_rate = self.hparams["teacher_layers"], self.hparams["rate"]
        layers = hparams.get("teacher_layers")
        if layers is None or layer_list(layers) != layer_list(own_layers) or hparams.get("rate") != own_rate:
            raise CheckpointError(
                f"paraphraser_ckpt {path} trained its paraphraser on the teacher's {hparams.get('teacher_layers')!r} "
                f"at rate {hparams.get('rate')}; this run reads {own_layers!r} at rate {own_rate}")
        state = checkpoint.get("state_dict", {})
        own = {name: tensor for name, tensor in self.state_dict().items() if ".paraphraser_" in name}
        mismatched = [name for name, tensor in own.items() if name not in state or state[name].shape != tensor.shape]
        if mismatched:
            others = " and others" if len(mismatched) > 1 else ""
            raise CheckpointError(f"paraphraser_ckpt {path} does not fit this teacher's paraphraser ({mismatched[0]}"
                                  f"{others}): was it trained for another teacher?")
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_(state[name])
        self._paraphraser_loaded = True

    def teacher_side(self, index: int, features: Tensor) -> Tensor:
        return self.projectors[index].encode_teacher(features)

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        if self.hparams["phase"] == "transfer":
            return super().training_losses(batch)
        pairs = self.feature_pairs()
        (teacher,) = self.teacher_outputs(batch, [pair.teacher_layer for pair in pairs])
        parts = [paraphraser_reconstruction_loss(projector.reconstruct_teacher(teacher.features[pair.teacher_layer]),
                                                 teacher.features[pair.teacher_layer])
                 for projector, pair in zip(self.projectors, pairs, strict=True)]
        reconstruction = sum(parts[1:], parts[0])
        # the student is not trained in this phase (its BatchNorm statistics neither): logits for the metrics only
        self.student.eval()
        try:
            with torch.no_grad():
                logits = self.student(batch["input"])
        finally:
            self.student.train()
        return {"loss": reconstruction, "reconstruction": reconstruction}, logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        paper = "paper" if arguments.get("convention") == "paper" else None
        if arguments.get("phase") == "paraphraser":
            return join_variants("paraphraser", super().run_variant(arguments))
        return join_variants(valued_variant(arguments, FT_DEFAULTS, {"ft_weight": "ft"}), paper,
                             super().run_variant(arguments))
