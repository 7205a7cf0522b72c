"""The base of every teacher -> student method: a frozen teacher beside a trained student."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.metrics import accuracy
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.base import BaseTask
from lightning_kd.teacher import prepare_teacher


class DistillationTask(BaseTask):
    """A student learns from a frozen teacher.

    The teacher is given as a network, a checkpoint (one written by this package, or a plain
    state dict), or both. It never receives gradients, is in no optimizer, stays in eval mode
    through fit and validation (BatchNorm uses its running statistics), runs under
    ``torch.no_grad()`` and is left out of DDP's gradient sync and buffer broadcast.

    Besides the student's metrics it logs ``{val,test}/agreement`` (student-teacher top-1
    agreement) and ``{val,test}/teacher_acc`` (the teacher's accuracy, computed in the first
    validation epoch of a fit rather than every epoch, since the teacher does not change).

    Args:
        student: The network to train.
        teacher: The teacher network; may be omitted when ``teacher_ckpt`` was written by a CLI run.
        teacher_ckpt: Path of the teacher's weights.
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
    """

    network_attribute = "student"
    teacher_required: ClassVar[bool] = True
    """Whether the task refuses to run without a teacher (Born-Again's generation 0 learns from labels)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, student=student, teacher=teacher, teacher_ckpt=teacher_ckpt)

    def configure_models(  # type: ignore[override]
        self, student: nn.Module | None, teacher: nn.Module | None, teacher_ckpt: str | Path | None
    ) -> None:
        if student is None:
            raise ValueError(f"{type(self).__name__} needs a student network (`student`)")
        self.student = student
        self.teacher: nn.Module | None = None
        if teacher is not None or teacher_ckpt is not None or self.teacher_required:
            self.teacher = prepare_teacher(teacher, teacher_ckpt)
        self._teacher_val_scored = False

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:
        # read by DistributedDataParallel when it wraps the module: no gradient all-reduce, no buffer
        # broadcast for the teacher
        return [] if self.teacher is None else [f"teacher.{name}" for name in self.teacher.state_dict()]

    def networks_to_check(self) -> dict[str, nn.Module]:
        networks = {"student": self.student}
        if self.teacher is not None:
            networks["teacher"] = self.teacher
        return networks

    def train(self, mode: bool = True) -> DistillationTask:
        # Lightning calls train() on the whole module at each epoch start; the teacher stays frozen
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits, constants for the loss (no_grad, not inference_mode: they are saved
        for the student's backward)."""
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} has no teacher yet")
        return self.teacher(x).detach()

    def configure_metrics(self, num_classes: int) -> None:
        super().configure_metrics(num_classes)
        self.val_agreement = accuracy(num_classes)
        self.test_agreement = accuracy(num_classes)
        self.val_teacher_acc = accuracy(num_classes)
        self.test_teacher_acc = accuracy(num_classes)

    def _score_teacher_on_val(self) -> bool:
        if self.trainer.sanity_checking:
            return False
        return self.trainer.state.fn != TrainerFn.FITTING or not self._teacher_val_scored

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        logits = super().evaluation_step(batch, stage)
        if self.teacher is None:
            return logits
        teacher_logits = self.teacher_logits(batch["input"])
        batch_size = len(batch["target"])
        agreement = self.val_agreement if stage == "val" else self.test_agreement
        agreement(logits, teacher_logits.argmax(dim=1))
        self.log(f"{stage}/agreement", agreement, batch_size=batch_size)
        if stage == "test":
            self.test_teacher_acc(teacher_logits, batch["target"])
            self.log("test/teacher_acc", self.test_teacher_acc, batch_size=batch_size)
        elif self._score_teacher_on_val():
            self.val_teacher_acc.update(teacher_logits, batch["target"])
        return logits

    def on_validation_epoch_end(self) -> None:
        if self.teacher is not None and self._score_teacher_on_val():
            # compute() syncs across processes; logged once per fit, the teacher does not change
            self.log("val/teacher_acc", self.val_teacher_acc.compute())
            self.val_teacher_acc.reset()
            self._teacher_val_scored = True
