"""Plain supervised training: teachers and label-only baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_kd.checkpoints import CHECKPOINT_KEY, load_network
from lightning_kd.data.base import Batch
from lightning_kd.errors import Refusal
from lightning_kd.losses import DEFAULT_SMOOTHING_CONVENTION, SmoothingConvention
from lightning_kd.optim import SGD, ScheduleSpec
from lightning_kd.tasks.base import BaseTask


class Classifier(BaseTask):
    """Train one network with cross-entropy, optionally label-smoothed (LSR).

    Its checkpoints are ready teachers: pass one as ``teacher_ckpt`` to any distillation method.

    Args:
        net: The network to train.
        label_smoothing: Smoothing ``eps`` in ``[0, 1)`` (every method's label term takes it).
        smoothing_convention: ``"uniform"`` (PyTorch's: ``1 - eps + eps/C`` on the true class, ``eps/C``
            elsewhere) or ``"others"`` (the Tf-KD code's: ``1 - eps`` on the true class, ``eps/(C-1)``
            elsewhere); see :mod:`lightning_kd.losses.label_smoothing`.
        optimizer: See :class:`~lightning_kd.tasks.base.BaseTask`.
        lr_scheduler: See :class:`~lightning_kd.tasks.base.BaseTask`.
        net_ckpt: Weights to start the network from (a checkpoint of this package, its trained network's, or a
            plain state dict): the second stage of FSP and FitNets-style methods, whose first run initialises the
            student. Read once, when the task is built; its checkpoints hold the weights after that.

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
        smoothing_convention: SmoothingConvention = DEFAULT_SMOOTHING_CONVENTION,
        optimizer: OptimizerCallable = SGD,
        lr_scheduler: ScheduleSpec = "cosine",
        net_ckpt: str | Path | None = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, net=net, net_ckpt=net_ckpt)

    def configure_models(self, net: nn.Module | None, net_ckpt: str | Path | None = None) -> None:  # type: ignore[override]
        if net is None:
            raise Refusal("Classifier needs a network (`net`)")
        self.net = load_network(net_ckpt, net) if net_ckpt is not None else net

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters")
        if hparams and hparams.get("net_ckpt") is not None:  # the weights it gave are in this checkpoint now
            checkpoint[CHECKPOINT_KEY]["net_ckpt"] = hparams["net_ckpt"]
            hparams["net_ckpt"] = None

    def trained_networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def configure_losses(self) -> None:
        self.criterion = self.label_smoothing()

    def training_losses(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        logits = self.net(batch["input"])
        return {"loss": self.criterion(logits, batch["target"])}, logits
