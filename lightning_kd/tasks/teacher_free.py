"""Teacher-free KD (Yuan et al. 2020): Tf-KD reg, a student regularised by a virtual teacher.

The rest of the paper's family needs no task of its own: Tf-KD self, Re-KD and De-KD are KD with an
unusual teacher (:class:`~lightning_kd.tasks.VanillaKD`, or :class:`~lightning_kd.tasks.BornAgain`
with ``loss: kd`` to train the teacher in the same run), and LSR is the ``label_smoothing`` every
method's label term takes. See the "Teacher-free KD" page of the docs for one config per experiment.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import (
    DEFAULT_REG_ALPHA,
    DEFAULT_REG_TEMPERATURE,
    DEFAULT_SMOOTHING_CONVENTION,
    DEFAULT_TRUE_CLASS_PROB,
    SmoothingConvention,
    TfKDRegLoss,
    TfKDRegMode,
)
from lightning_kd.naming import join_variants
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.base import BaseTask


class TeacherFreeKD(BaseTask):
    """Tf-KD reg: ``(1 - alpha) * CE(zs, y) + alpha * reg`` against a virtual teacher, no teacher network.

    The virtual teacher puts ``true_class_prob`` (the paper's ``a``) on the true class and spreads the
    rest evenly over the others. ``mode`` picks the regulariser
    (:mod:`lightning_kd.losses.teacher_free` gives both formulas):

    * ``"paper"``: ``tau^2 * KL(softmax(log(p_d)/tau) || softmax(zs/tau))``, as the paper writes it;
    * ``"reference"``: what the authors' code computes, ``multiplier * KLDivLoss()(log_softmax(zs),
      softmax(p_d/tau))`` (the target within about ``1/tau`` of uniform, ``'mean'`` over ``B * C``).

    Logs ``train/ce_loss`` and ``train/reg_loss`` (unweighted) beside ``train/loss``.

    Args:
        student: The network to train.
        true_class_prob: The virtual teacher's ``a`` in ``(0, 1]`` (paper: 0.99; it asks for ``a >= 0.9``).
        temperature: ``tau > 0`` (paper: ``tau >= 20``).
        alpha: Weight of the regulariser in ``[0, 1]``; ``1 - alpha`` weights the label term.
        mode: ``"paper"`` (default) or ``"reference"``.
        multiplier: ``mode="reference"`` only: the code's factor on its ``'mean'``-reduced KL (default 1;
            the number of classes turns ``'mean'`` into a per-sample average).
        label_smoothing: Smoothing ``eps`` of the label term, in ``[0, 1)``.
        smoothing_convention: ``"uniform"`` or ``"others"`` (see :class:`~lightning_kd.tasks.Classifier`).
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.

    Example:
        >>> from lightning_kd.models import MLP
        >>> task = TeacherFreeKD(MLP(hidden_sizes=(16,), num_classes=10), mode="reference", multiplier=10.0)
        >>> task.criterion
        TfKDRegLoss(mode='reference', true_class_prob=0.99, temperature=20.0, alpha=0.1, multiplier=10.0)
        >>> list(task.networks())
        ['student']
    """

    def __init__(
        self,
        student: nn.Module,
        true_class_prob: float = DEFAULT_TRUE_CLASS_PROB,
        temperature: float = DEFAULT_REG_TEMPERATURE,
        alpha: float = DEFAULT_REG_ALPHA,
        mode: TfKDRegMode = "paper",
        multiplier: float | None = None,
        label_smoothing: float = 0.0,
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, student=student)

    def configure_losses(self) -> None:
        hparams = self.hparams
        self.criterion = TfKDRegLoss(hparams["true_class_prob"], hparams["temperature"], hparams["alpha"],
                                     hparams["mode"], hparams["multiplier"], self.label_smoothing())

    def configure_models(self, student: nn.Module | None) -> None:  # type: ignore[override]
        if student is None:
            raise Refusal("TeacherFreeKD needs a student network (`student`)")
        self.student = student

    def trained_networks(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        logits = self.student(batch["input"])
        return self.criterion(logits, batch["target"]), logits

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        mode = arguments.get("mode", "paper")
        own = (f"{mode}-a{arguments.get('true_class_prob', DEFAULT_TRUE_CLASS_PROB):g}"
               f"-T{arguments.get('temperature', DEFAULT_REG_TEMPERATURE):g}"
               f"-alpha{arguments.get('alpha', DEFAULT_REG_ALPHA):g}")
        return join_variants(own, super().run_variant(arguments))
