"""Plain supervised training: teachers and label-only baselines."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.data.base import Batch
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.base import BaseTask


class Classifier(BaseTask):
    """Train one network with cross-entropy (optionally label-smoothed).

    Its checkpoints are ready teachers: pass one as ``teacher_ckpt`` to any distillation method.

    Args:
        net: The network to train.
        label_smoothing: Smoothing ``eps`` in ``[0, 1)``; PyTorch's form puts ``1 - eps + eps/C`` on
            the true class and ``eps/C`` elsewhere.
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> task = Classifier(SmallCNN(num_classes=10), label_smoothing=0.1)
        >>> task.hparams.label_smoothing
        0.1
    """

    handed_on = "net"

    def __init__(
        self,
        net: nn.Module,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, net=net)

    @classmethod
    def run_variant(cls, arguments: dict[str, Any]) -> str | None:
        smoothing = arguments.get("label_smoothing", 0.0)
        return f"ls{smoothing:g}" if smoothing else None

    def configure_models(self, net: nn.Module | None) -> None:  # type: ignore[override]
        if net is None:
            raise ValueError("Classifier needs a network (`net`)")
        self.net = net

    def trained_networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def configure_losses(self) -> None:
        smoothing = self.hparams["label_smoothing"]
        if not 0 <= smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing}")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        logits = self.net(batch["input"])
        return {"loss": self.criterion(logits, batch["target"])}, logits
