"""Optimizer and schedule defaults of the KD literature, configurable from YAML.

``optimizer`` takes any ``torch.optim`` class (``class_path``/``init_args``); ``lr_scheduler`` any
``torch.optim.lr_scheduler`` class, or ``"cosine"`` (cosine decay over the trainer's ``max_epochs``,
the default) or ``"none"``. Lightning's ``pytorch_lightning.cli.ReduceLROnPlateau`` steps on the metric its
``monitor`` names (the language-model recipe: ``val/ppl``, ``factor: 0.25``, ``patience: 0``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lightning_kd.errors import Refusal

ScheduleSpec = LRSchedulerCallable | Literal["cosine", "none"]


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with the CIFAR KD recipe as defaults (lr 0.05, momentum 0.9, wd 5e-4).

    Example:
        >>> import torch
        >>> SGD([torch.nn.Parameter(torch.zeros(1))]).defaults["lr"]
        0.05
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def build_optimization(
    parameters: Iterable[torch.nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: ScheduleSpec,
    max_epochs: int | None,
) -> Any:
    """Build what ``LightningModule.configure_optimizers`` returns.

    Args:
        parameters: The trainable parameters (never a frozen teacher's).
        optimizer: Callable mapping parameters to an optimizer.
        lr_scheduler: Callable mapping the optimizer to an epoch-wise scheduler, ``"cosine"`` or ``"none"``.
        max_epochs: The trainer's epoch budget, the length of the cosine schedule.
    """
    opt = optimizer(parameters)
    if lr_scheduler == "none":
        return opt
    if lr_scheduler == "cosine":
        if max_epochs is None or max_epochs < 1:
            raise Refusal("the 'cosine' schedule needs trainer.max_epochs >= 1; set it or choose lr_scheduler")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    else:
        scheduler = lr_scheduler(opt)
    schedule = {"scheduler": scheduler, "interval": "epoch"}
    if getattr(scheduler, "monitor", None):  # Lightning's ReduceLROnPlateau: steps on the metric it names
        schedule["monitor"] = scheduler.monitor
    return {"optimizer": opt, "lr_scheduler": schedule}
