"""Token-level distillation of language models with a chosen divergence: forward KL, reverse KL or GKD's JSD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention, TokenDivergence, TokenKDLoss
from lightning_kd.models.inheritance import InheritSpec
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.distillation import DistillationTask


class TokenKD(DistillationTask):
    """``L = (1 - alpha) * CE(zs, y) + alpha * D(zs, zt)`` at every position, ``D`` a token-level divergence.

    ``D`` is ``"forward_kl"`` (word-level KD, Kim & Rush 2016: Hinton's loss at every token),
    ``"reverse_kl"`` (mode-seeking, as MiniLLM) or ``"jsd"``, GKD's generalised Jensen-Shannon divergence
    whose ``beta`` is the teacher's weight in the mixture (0: forward KL, 1: reverse KL; see
    :mod:`lightning_kd.losses.token_kd` for the convention, which projects disagree on). This is GKD's
    supervised form, on the data's sequences; its on-policy form (the student's own samples) is not built.
    ``alpha`` weights the divergence (Hinton's convention). Logs ``train/ce_loss`` and ``train/kd_loss``.
    Works on classifiers too (a sample is one position).

    Args:
        student: The network to train.
        teacher: The teacher network (optional when ``teacher_ckpt`` comes from a CLI run).
        teacher_ckpt: Path of the teacher's weights.
        divergence: ``"forward_kl"``, ``"reverse_kl"`` or ``"jsd"``.
        beta: The JSD's teacher weight in ``[0, 1]`` (``"jsd"`` only).
        alpha: Weight of the divergence, in ``[0, 1]``.
        temperature: Softmax temperature, ``> 0`` (the divergence is multiplied by ``T^2``).
        label_smoothing: Smoothing ``eps`` of the label term.
        smoothing_convention: ``"uniform"`` or ``"others"``.
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        student_ckpt: Weights to start the student from.
        inherit_layers: Teacher layers copied into the student and frozen (see
            :class:`~lightning_kd.tasks.DistillationTask`).

    Example:
        >>> from lightning_kd.models import LSTMLanguageModel
        >>> lstm = lambda: LSTMLanguageModel(50, preset="small")
        >>> task = TokenKD(lstm(), lstm(), divergence="jsd")
        >>> task.criterion
        TokenKDLoss(divergence='jsd', beta=0.5, alpha=0.5, temperature=1.0)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_ckpt: str | Path | None = None,
        divergence: TokenDivergence = "forward_kl",
        beta: float = 0.5,
        alpha: float = 0.5,
        temperature: float = 1.0,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        student_ckpt: str | Path | None = None,
        inherit_layers: InheritSpec = None,
    ) -> None:
        super().__init__(student, teacher, teacher_ckpt, optimizer, lr_scheduler, student_ckpt, inherit_layers)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        divergence = arguments.get("divergence", "forward_kl")
        own = divergence + (f"{arguments.get('beta', 0.5):g}" if divergence == "jsd" else "")
        return join_variants(f"{own}-alpha{arguments.get('alpha', 0.5):g}", super().run_variant(arguments))

    def configure_losses(self) -> None:
        self.criterion = TokenKDLoss(self.hparams["divergence"], self.hparams["beta"], self.hparams["alpha"],
                                     self.hparams["temperature"], self.label_smoothing())

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        (teacher,) = self.teacher_outputs(batch)
        logits = self.student(batch["input"])
        return self.criterion(logits, teacher.logits, batch["target"]), logits
