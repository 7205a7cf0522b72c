"""Optimizer and schedule defaults of the KD literature, configurable from YAML.

``optimizer`` takes any ``torch.optim`` class (``class_path``/``init_args``); ``lr_scheduler`` any
``torch.optim.lr_scheduler`` class, or ``"cosine"`` (cosine decay over the trainer's ``max_epochs``,
the default) or ``"none"``. :class:`PlateauDecay` decays on a monitored metric (the language-model recipe);
Lightning's ``ReduceLROnPlateau`` works too, but a resumed run then skips one of its steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_kd.compat import fused_kernel_devices, mark_fused
from lightning_kd.errors import Refusal

# the names first: jsonargparse serialises a name matched by a later callable type as "Unable to serialize"
ScheduleSpec = Literal["cosine", "none"] | LRSchedulerCallable


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


class PlateauDecay(torch.optim.lr_scheduler.LRScheduler):
    """Multiply the learning rate by ``factor`` when the metric ``monitor`` names (lower is better) stops improving.

    The language-model recipe (Zaremba et al.; Born-Again's LSTMs: ``factor=0.25``, ``patience=0``; Kim et al.'s
    character-aware model: ``factor=0.5``, ``threshold=0.5``). Unlike Lightning's ``ReduceLROnPlateau`` (which
    Lightning does not step for the epoch a checkpoint was saved in when a run resumes), the task hands it the
    metric at the end of validation (:meth:`observe`), before any checkpoint is written, and it decides when it
    is stepped at the epoch's end: a resumed run decays exactly as an uninterrupted one.

    Args:
        optimizer: The optimizer whose learning rates decay.
        monitor: The logged metric to watch (e.g. ``val/ppl``).
        factor: The multiplier, in ``(0, 1)``.
        patience: Epochs without improvement tolerated before a decay.
        threshold: How much lower than the best a value must be to count as an improvement.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> schedule = PlateauDecay(opt, factor=0.25)
        >>> for value in (100.0, 90.0, 95.0, 80.0):
        ...     schedule.observe(value)
        ...     schedule.step()
        >>> schedule.get_last_lr()  # 95 did not improve on 90
        [0.25]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, monitor: str = "val/ppl", factor: float = 0.25,
                 patience: int = 0, threshold: float = 0.0) -> None:
        if not 0 < factor < 1:
            raise Refusal(f"factor must be in (0, 1), got {factor}")
        if patience < 0 or threshold < 0:
            raise Refusal(f"patience and threshold must be >= 0, got {patience} and {threshold}")
        self.monitor, self.factor, self.patience, self.threshold = monitor, factor, patience, threshold
        self.best, self.bad_epochs, self.observed = float("inf"), 0, None
        super().__init__(optimizer)

    def observe(self, value: float) -> None:
        """The monitored metric's value this epoch (the next :meth:`step` decides on it)."""
        self.observed = float(value)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        if self.observed is not None:
            if self.observed < self.best - self.threshold:
                self.best, self.bad_epochs = self.observed, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs > self.patience:
                    for group in self.optimizer.param_groups:
                        group["lr"] *= self.factor
                    self.bad_epochs = 0
            self.observed = None
        self._last_lr = self.get_lr()


def observe_monitored(schedulers: Any, metrics: dict[str, Any], sanity_checking: bool = False) -> None:
    """Hand each :class:`PlateauDecay` its monitored metric (a torchmetrics metric of the task, computed now).

    Raises:
        Refusal: A schedule monitors a name that is not among ``metrics``.
    """
    if sanity_checking or schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if isinstance(scheduler, PlateauDecay):
            if scheduler.monitor not in metrics:
                raise Refusal(f"PlateauDecay monitors {scheduler.monitor!r}, which is not one of the task's evaluation "
                              f"metrics: choose one of {', '.join(sorted(metrics))}")
            scheduler.observe(float(metrics[scheduler.monitor].compute()))


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

    Raises:
        Refusal: The optimizer refuses a setting (torch's own ``ValueError``, in one line), or a learning rate is
            not finite or overflows the parameters' type (torch would fail at the first step).
    """
    parameters = list(parameters)
    try:
        opt = optimizer(parameters)
    except ValueError as error:  # torch's checks of lr, momentum, weight decay...: the user's values
        raise Refusal(f"the optimizer refuses its settings: {error}") from error
    largest = max((torch.finfo(p.dtype).max for p in parameters if p.is_floating_point()), default=None)
    for group in opt.param_groups:
        lr = float(group.get("lr", 0.0))
        if not math.isfinite(lr) or (largest is not None and abs(lr) > largest):
            raise Refusal(f"the optimizer's lr {lr:g} is not finite or overflows the parameters' type (largest "
                          f"{largest:g}): choose a learning rate a step can apply")
    if lr_scheduler == "none":
        return opt
    if lr_scheduler == "cosine":
        if max_epochs is None or max_epochs < 1:
            raise Refusal("the 'cosine' schedule needs trainer.max_epochs >= 1; set it or choose lr_scheduler")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    else:
        scheduler = lr_scheduler(opt)
    schedule = {"scheduler": scheduler, "interval": "epoch"}
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # Lightning steps it on this metric
        schedule["monitor"] = getattr(scheduler, "monitor", "val/loss")
    return {"optimizer": opt, "lr_scheduler": schedule}


def use_fused_step(optimizer: torch.optim.Optimizer, unscales: bool = True) -> bool:
    """Switch ``optimizer`` to torch's fused kernel (one kernel for every parameter's update) where it has one.

    SGD, Adam and AdamW have one on CPUs and GPUs (``fused=True``); its arithmetic is the same as the per-tensor
    loop's, in another order of operations. Returns whether the optimizer now steps fused; an optimizer without a
    fused kernel, or with parameters on a device or in a type the kernel lacks, is left as it is. With a gradient
    scaler (``16-mixed``) the kernel also unscales the gradients, unless ``unscales`` is ``False``: then the scaler
    unscales them before the step, as gradient clipping needs.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> use_fused_step(opt), opt.param_groups[0]["fused"]
        (True, True)
        >>> use_fused_step(torch.optim.RMSprop(torch.nn.Linear(2, 1).parameters()))
        False
    """
    if "fused" not in optimizer.defaults or optimizer.defaults.get("differentiable"):
        return False
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    devices = fused_kernel_devices()
    if not all(p.device.type in devices and p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
               for p in parameters):
        return False
    mark_fused(optimizer, unscales)
    for parameter in parameters:  # Adam keeps its step count on the host unless fused; the kernel reads the device
        step = optimizer.state.get(parameter, {}).get("step")
        if isinstance(step, Tensor) and step.device != parameter.device:
            optimizer.state[parameter]["step"] = step.to(parameter.device, torch.float32)
    return True
