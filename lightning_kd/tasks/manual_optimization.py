"""The one escape hatch from Lightning's automatic optimisation: one optimizer per trained network.

Every method of the package is optimised by Lightning (one optimizer over every trainable parameter;
:meth:`~lightning_kd.tasks.base.BaseTask.training_losses` is all a method writes), except when its
networks must step apart: Deep Mutual Learning's alternating scheme updates one peer at a time on a
batch. :class:`PerNetworkOptimization` holds that machinery, so a task that needs it mixes it in and
keeps only its scheme: :meth:`~PerNetworkOptimization.step_all` (one backward of the summed losses, every
optimizer stepped; what DDP needs) or :meth:`~PerNetworkOptimization.step_one` (one network's backward and
step; under DDP without DDP's sync, that network's gradients averaged over the processes by hand).
Learning-rate schedules are stepped at each epoch's end. See ``docs/extending.rst``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.optim import build_optimization


class PerNetworkOptimization:
    """Mixin for a :class:`~lightning_kd.tasks.base.BaseTask`: an optimizer (and schedule) per trained network.

    The task sets ``self.automatic_optimization = False`` and, with ``shared_optimizer`` in its
    hyperparameters, may put every network under one optimizer instead. Lightning's ``gradient_clip_val``
    does not apply to manual optimisation: a ``gradient_clip_val`` hyperparameter of the task clips each
    optimizer's gradients (their norm) before it steps.
    """

    def optimized_networks(self) -> list[nn.Module]:
        """The networks that each get an optimizer, in order (default: :meth:`trained_networks`)."""
        return list(self.trained_networks().values())  # type: ignore[attr-defined]

    def configure_optimizers(self) -> Any:
        if self.hparams.get("shared_optimizer"):  # type: ignore[attr-defined]
            groups = [list(self.trainable_parameters())]  # type: ignore[attr-defined]
        else:
            groups = [[p for p in network.parameters() if p.requires_grad] for network in self.optimized_networks()]
        optimizers, schedulers = [], []
        for parameters in groups:
            built = build_optimization(parameters, self.optimizer, self.lr_scheduler,  # type: ignore[attr-defined]
                                       self.schedule_epochs())  # type: ignore[attr-defined]
            if isinstance(built, dict):
                optimizers.append(built["optimizer"])
                schedulers.append(built["lr_scheduler"])
            else:
                optimizers.append(built)
        return optimizers, schedulers

    def all_optimizers(self) -> list[Any]:
        optimizers = self.optimizers()  # type: ignore[attr-defined]
        return list(optimizers) if isinstance(optimizers, list) else [optimizers]

    def optimizer_of(self, index: int) -> Any:
        """The optimizer of the ``index``-th network (the shared one when there is one)."""
        optimizers = self.all_optimizers()
        return optimizers[0] if len(optimizers) == 1 else optimizers[index]

    def step_all(self, loss: Tensor) -> None:
        """One backward of ``loss`` (the networks' summed losses: DDP syncs once), then every optimizer steps."""
        optimizers = self.all_optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(loss)  # type: ignore[attr-defined]
        for optimizer in optimizers:
            self._clip(optimizer)
            optimizer.step()

    def step_one(self, loss: Tensor, index: int) -> None:
        """Back-propagate ``loss`` into the ``index``-th network only and step its optimizer.

        Under DDP the backward runs without DDP's sync (which expects a gradient for every parameter), and
        that network's gradients are then averaged over the processes here.
        """
        network = self.optimized_networks()[index]
        optimizer = self.optimizer_of(index)
        optimizer.zero_grad()
        trainer = self.trainer  # type: ignore[attr-defined]
        wrapper = trainer.strategy.model if trainer.world_size > 1 else None
        if wrapper is None or not hasattr(wrapper, "no_sync"):
            self.manual_backward(loss)  # type: ignore[attr-defined]
        else:
            with wrapper.no_sync():
                self.manual_backward(loss)  # type: ignore[attr-defined]
            gradients = [p.grad for p in network.parameters() if p.grad is not None]
            if gradients:
                flat = trainer.strategy.reduce(torch.cat([g.flatten() for g in gradients]), reduce_op="mean")
                for gradient, averaged in zip(gradients, flat.split([g.numel() for g in gradients]), strict=True):
                    gradient.copy_(averaged.view_as(gradient))
        self._clip(optimizer)
        optimizer.step()

    def _clip(self, optimizer: Any) -> None:
        clip = self.hparams.get("gradient_clip_val")  # type: ignore[attr-defined]
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")  # type: ignore

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # type: ignore[misc]
        # manual optimisation: Lightning leaves the (epoch-wise) schedules to the task
        schedulers = self.lr_schedulers()  # type: ignore[attr-defined]
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()
