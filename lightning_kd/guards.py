"""The guarantees every training step keeps, as functions a task (or a hand-written loop) calls."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_kd.errors import NonFiniteLossError
from lightning_kd.metrics import training_metric_name


def stop_if_not_finite(losses: dict[str, Tensor], trainer: pl.Trainer | None) -> None:
    """Raise :class:`~lightning_kd.errors.NonFiniteLossError` if a loss (or a part of it) is NaN or infinite.

    Under DDP every process stops, not one alone. Called before the optimizer steps, so no checkpoint of
    such weights is ever written.

    Example:
        >>> stop_if_not_finite({"loss": torch.tensor(1.0)}, None)
        >>> stop_if_not_finite({"loss": torch.tensor(float("nan"))}, None)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.NonFiniteLossError: training stopped at a step: train/loss = nan is not finite. \
Likely causes: a learning rate too high for this network (the optimizer's lr), an extreme hyperparameter, or NaN \
inputs (the data's normalisation). No checkpoint of these weights was written.
    """
    finite = bool(torch.isfinite(torch.stack([v.detach().float().sum() for v in losses.values()])).all())
    if trainer is not None and trainer.world_size > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return
    bad = [f"{training_metric_name(name)} = {float(v.detach().float().sum())}"
           for name, v in losses.items() if not torch.isfinite(v.detach()).all()]
    where = f"step {trainer.global_step} (epoch {trainer.current_epoch})" if trainer is not None else "a step"
    raise NonFiniteLossError(
        f"training stopped at {where}: {', '.join(bad) or 'the loss of another process'} is not finite. "
        "Likely causes: a learning rate too high for this network (the optimizer's lr), an extreme "
        "hyperparameter, or NaN inputs (the data's normalisation). No checkpoint of these weights was written."
    )
