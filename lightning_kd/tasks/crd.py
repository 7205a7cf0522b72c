"""Contrastive representation distillation, CRD (Tian, Krishnan & Isola 2020): the student's and the teacher's
embeddings contrasted with memory banks of every training sample's past embeddings."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.compat import attached_trainer
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, DEFAULT_TEMPERATURE, SmoothingConvention
from lightning_kd.losses.crd import (
    CRD_DEFAULTS,
    ContrastMemory,
    check_crd_settings,
    crd_embedding,
    crd_loss,
    negatives_of_other_classes,
)
from lightning_kd.losses.validation import check_temperature
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants, valued_variant
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.feature_distillation import FeatureDistillationTask, FeaturePair, PairEmbeddings


class CRD(FeatureDistillationTask):
    """``ce_weight * CE + crd_weight * (NCE_student + NCE_teacher) [+ kd_weight * T^2 KL]`` with memory banks.

    See :mod:`lightning_kd.losses.crd` for the loss as the authors' code computes it. The two embedding maps are
    trained with the student (they are this task's ``projectors``); the memory banks (``memory``: one row per
    training sample for each network, and the two normalising constants) are buffers, saved in every checkpoint, so
    a resumed run goes on with the banks it had. Negatives are drawn each step among the training samples of other
    classes (the authors' "exact" sampling), by the batch's ``index``. Under DDP every process applies every
    process's batch to the banks (they stay equal) and the constants are the processes' mean. Logs
    ``train/ce_loss``, ``train/crd_loss`` (and ``train/kd_loss``), unweighted.

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        crd_weight: Weight of the contrastive term, ``>= 0`` (default 0.8).
        dim: Width of the embeddings (default 128).
        negatives: Negatives ``K`` per sample (default 16384).
        nce_temperature: Temperature of the scores (default 0.07).
        momentum: Weight of a memory row's old value in its update, in ``[0, 1)`` (default 0.5).
        kd_weight: Weight of an added Hinton term, ``>= 0`` (default 0; 1 for the benchmarks' "CRD+KD").
        temperature: The Hinton term's temperature.
        student_layer: The student's features to embed (default ``"penultimate"``).
        teacher_layer: The teacher's (default ``"penultimate"``).
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
        >>> task = CRD(MLP(hidden_sizes=(16,)), SmallCNN((8, 16)), negatives=64)
        >>> task.build_projectors((1, 8, 8))
        >>> task.projectors[0]
        PairEmbeddings(
          (student): Linear(in_features=16, out_features=128, bias=True)
          (teacher): Linear(in_features=16, out_features=128, bias=True)
        )
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        crd_weight: float = CRD_DEFAULTS["crd_weight"],
        dim: int = CRD_DEFAULTS["dim"],
        negatives: int = CRD_DEFAULTS["negatives"],
        nce_temperature: float = CRD_DEFAULTS["nce_temperature"],
        momentum: float = CRD_DEFAULTS["momentum"],
        kd_weight: float = 0.0,
        temperature: float = DEFAULT_TEMPERATURE,
        student_layer: str = "penultimate",
        teacher_layer: str = "penultimate",
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
        check_crd_settings(hparams["crd_weight"], hparams["ce_weight"], hparams["kd_weight"], hparams["dim"],
                           hparams["negatives"], hparams["nce_temperature"], hparams["momentum"])
        check_temperature(hparams["temperature"])
        self.smoothing = self.label_smoothing()
        self.memory: ContrastMemory | None = None

    def feature_pairs(self) -> list[FeaturePair]:
        return [FeaturePair(self.hparams["student_layer"], self.hparams["teacher_layer"], "linear", True)]

    def make_projector(self, index: int, pair: FeaturePair, student_shape: tuple[int, ...],
                       teacher_shape: tuple[int, ...]) -> nn.Module:
        return PairEmbeddings(math.prod(student_shape), math.prod(teacher_shape), self.hparams["dim"])

    # -- the memory banks -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        train_set = getattr(getattr(attached_trainer(self), "datamodule", None), "train_set", None)
        if not callable(getattr(train_set, "targets", None)):
            raise Refusal("CRD draws its negatives by the training samples' labels and indices: use a lightning_kd "
                          "image data module (its train_set tells both)")
        labels = train_set.targets().to(self.device)
        if self.memory is not None and self.memory.num_data != len(labels):
            raise Refusal(f"CRD's memory banks hold {self.memory.num_data} rows, but the training split has "
                          f"{len(labels)} samples: continue on the data the banks were filled from")
        if self.memory is None:
            hparams = self.hparams
            self.memory = ContrastMemory(len(labels), hparams["dim"], hparams["nce_temperature"],
                                         hparams["momentum"]).to(self.device)
        self.register_buffer("train_labels", labels, persistent=False)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        rows = checkpoint.get("state_dict", {}).get("memory.student")
        if rows is not None and (self.memory is None or self.memory.num_data != rows.shape[0]):
            hparams = self.hparams  # the banks' size, from the checkpoint (loaded into them next)
            self.memory = ContrastMemory(rows.shape[0], rows.shape[1], hparams["nce_temperature"], hparams["momentum"])

    def gathered(self, tensor: Tensor) -> Tensor:
        """``tensor`` of every process, concatenated in rank order (itself alone without DDP)."""
        trainer = attached_trainer(self)
        if trainer is None or trainer.world_size == 1:
            return tensor
        return self.all_gather(tensor).flatten(0, 1)

    # -- training ---------------------------------------------------------------------------------
    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        if self.memory is None:
            raise RuntimeError("CRD trains inside a fit, which sets up its memory banks from the training split")
        student_out, teacher_out = self.tapped(batch)
        (student_features,), (teacher_features,) = self.raw_features(student_out, teacher_out)
        embeddings = self.projectors[0]
        student = crd_embedding(student_features, embeddings.student)
        teacher = crd_embedding(teacher_features.to(student_features.dtype), embeddings.teacher)
        negatives = negatives_of_other_classes(self.train_labels, batch["target"], self.hparams["negatives"])
        rows = nn.functional.pad(negatives, (1, 0))
        rows[:, 0] = batch["index"]  # the positive first
        student_scores, teacher_scores = self.memory.raw_scores(student, teacher, rows)
        if bool((self.memory.normalisers < 0).any()):  # Z from the first batch, as the authors: the processes' mean
            first = torch.stack([student_scores.detach().mean(), teacher_scores.detach().mean()]) * self.memory.num_data
            self.memory.normalisers.copy_(self.gathered(first.unsqueeze(0)).mean(dim=0))
        normalisers = self.memory.normalisers.to(student_scores.dtype)
        losses = crd_loss(student_out.logits, batch["target"], student_scores / normalisers[0],
                          teacher_scores / normalisers[1], self.memory.num_data, self.hparams["crd_weight"],
                          self.hparams["ce_weight"], self.hparams["kd_weight"],
                          teacher_out.logits.to(student_out.logits.dtype), self.hparams["temperature"], self.smoothing)
        self.memory.update(self.gathered(batch["index"]), self.gathered(student.detach()),
                           self.gathered(teacher.detach()))
        return losses, student_out.logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        own = valued_variant(arguments, CRD_DEFAULTS, {"crd_weight": "crd", "negatives": "K"})
        kd = f"kd{arguments['kd_weight']:g}" if arguments.get("kd_weight") else None
        return join_variants(own, kd, super().run_variant(arguments))

