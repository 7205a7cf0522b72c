"""The guarantees every training step keeps, as functions a task (or a hand-written loop) calls.

A finite loss does not mean finite weights (BatchNorm keeps the loss finite while the weights before it
reach inf), and finite weights do not mean finite outputs (weights of 1e23 overflow a product): the losses,
the weights and the evaluated outputs are each checked (see :mod:`lightning_kd.tasks.finite` for when).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_kd.compat import foreach_l2_norms, foreach_max_abs
from lightning_kd.errors import NonFiniteLossError, NonFiniteOutputsError, NonFiniteWeightsError
from lightning_kd.metrics import training_metric_name

CAUSES = ("Likely causes: a learning rate too high for this network (the optimizer's lr), an extreme "
          "hyperparameter, or NaN inputs (the data's normalisation).")
NOT_WRITTEN = "No checkpoint of these weights was written."


def largest_magnitudes(weights: Mapping[str, Tensor]) -> Tensor:
    """Each tensor's largest absolute value (NaN if it holds a NaN), as one vector: one pass, no overflow.

    Example:
        >>> largest_magnitudes({"w": torch.tensor([1.0, -3.0]), "b": torch.tensor([float("inf")])})
        tensor([3., inf])
    """
    tensors = [t.detach() for t in weights.values()]
    if not tensors:
        return torch.zeros(0)
    return torch.stack([m.float() for m in foreach_max_abs(tensors)])


def finite_flags(tensors: Sequence[Tensor]) -> Tensor:
    """Whether each of ``tensors`` (the trained weights, say) is finite, as booleans on the device, computed without
    synchronising (a handful of operations, however many tensors).

    Every tensor is read by its L2 norm, in one fused pass (a NaN or inf makes its norm one). A finite weight
    large enough for its square to overflow reads as not finite here, so a ``False`` is a reason to make the
    exact check (:func:`stop_if_not_finite`), never a verdict by itself.

    Example:
        >>> finite_flags([torch.ones(3), torch.tensor([float("nan")])])
        tensor([ True, False])
    """
    if not tensors:
        return torch.ones(0, dtype=torch.bool)
    with torch.no_grad():  # the weights are parameters: no autograd record of their norms
        return torch.isfinite(torch.stack(foreach_l2_norms(list(tensors))))


def describe_not_finite(weights: Mapping[str, Tensor], magnitudes: Tensor) -> str:
    """The tensors of ``weights`` whose ``magnitudes`` (:func:`largest_magnitudes`) are not finite, for a message."""
    bad = [name for name, m in zip(weights, magnitudes.tolist(), strict=True) if not math.isfinite(m)]
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return f"{shown} ({len(bad)} of {len(weights)} tensors)"


def stop_if_weights_not_finite(weights: Mapping[str, Tensor], where: str) -> None:
    """Raise :class:`~lightning_kd.errors.NonFiniteWeightsError` if a trained weight or buffer is NaN or infinite.

    ``where`` says what was about to happen (``"before validation at epoch 3"``). No synchronisation between
    processes: under DDP the weights are the same on every process, so every process stops.

    Example:
        >>> stop_if_weights_not_finite({"fc.weight": torch.ones(2)}, "before a checkpoint")
        >>> stop_if_weights_not_finite({"bn.running_var": torch.tensor([float("inf")])}, "before a checkpoint")
        Traceback (most recent call last):
        ...
        lightning_kd.errors.NonFiniteWeightsError: stopped before a checkpoint: weights are not finite: \
bn.running_var (1 of 1 tensors). Likely causes: a learning rate too high for this network (the optimizer's lr), \
an extreme hyperparameter, or NaN inputs (the data's normalisation). No checkpoint of these weights was written.
    """
    magnitudes = largest_magnitudes(weights)
    if bool(torch.isfinite(magnitudes).all()):
        return
    raise NonFiniteWeightsError(f"stopped {where}: weights are not finite: {describe_not_finite(weights, magnitudes)}. "
                                f"{CAUSES} {NOT_WRITTEN}")


def stop_if_outputs_not_finite(count: int, total: int, network: str, where: str,
                               weights: Mapping[str, Tensor]) -> None:
    """Raise :class:`~lightning_kd.errors.NonFiniteOutputsError` if ``count`` of ``total`` outputs were not finite.

    Example:
        >>> stop_if_outputs_not_finite(0, 10, "student", "validation at epoch 0", {})
        >>> stop_if_outputs_not_finite(3, 10, "student", "validation at epoch 0", {"w": torch.tensor([1e30])})
        Traceback (most recent call last):
        ...
        lightning_kd.errors.NonFiniteOutputsError: validation at epoch 0: 3 of 10 outputs of the student are not \
finite (its largest weight magnitude is 1e+30): the network has diverged, so its scores would mean nothing. Likely \
causes: a learning rate too high for this network (the optimizer's lr), an extreme hyperparameter, or NaN inputs \
(the data's normalisation). No checkpoint of these weights was written.
    """
    if count == 0:
        return
    magnitudes = largest_magnitudes(weights)
    largest = f" (its largest weight magnitude is {float(magnitudes.max()):.3g})" if len(magnitudes) else ""
    raise NonFiniteOutputsError(
        f"{where}: {count:,} of {total:,} outputs of the {network} are not finite{largest}: the network has "
        f"diverged, so its scores would mean nothing. {CAUSES} {NOT_WRITTEN}")


def stop_if_not_finite(losses: dict[str, Tensor], trainer: pl.Trainer | None,
                       weights: Mapping[str, Tensor] | None = None) -> None:
    """Raise :class:`~lightning_kd.errors.NonFiniteLossError` if a loss (or a part of it) is NaN or infinite, or
    :class:`~lightning_kd.errors.NonFiniteWeightsError` if one of ``weights`` is (one check, one synchronisation).

    Under DDP every process stops, not one alone. Called before the optimizer steps, so no checkpoint of
    such weights is ever written; ``weights`` are those the previous step left.

    Example:
        >>> stop_if_not_finite({"loss": torch.tensor(1.0)}, None)
        >>> stop_if_not_finite({"loss": torch.tensor(float("nan"))}, None)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.NonFiniteLossError: training stopped at a step: train/loss = nan is not finite. \
Likely causes: a learning rate too high for this network (the optimizer's lr), an extreme hyperparameter, or NaN \
inputs (the data's normalisation). No checkpoint of these weights was written.
    """
    sums = torch.stack([v.detach().float().sum() for v in losses.values()])
    magnitudes = largest_magnitudes(weights or {}).to(sums.device)
    finite = bool(torch.isfinite(torch.cat([sums, magnitudes])).all())
    if trainer is not None and trainer.world_size > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return
    bad = [f"{training_metric_name(name)} = {float(v.detach().float().sum())}"
           for name, v in losses.items() if not torch.isfinite(v.detach()).all()]
    where = f"step {trainer.global_step} (epoch {trainer.current_epoch})" if trainer is not None else "a step"
    if not bad and not bool(torch.isfinite(magnitudes).all()):  # a finite loss over diverged weights
        raise NonFiniteWeightsError(
            f"training stopped at {where}: weights are not finite although the loss is (BatchNorm can hide a "
            f"divergence): {describe_not_finite(weights or {}, magnitudes.cpu())}. {CAUSES} {NOT_WRITTEN}")
    raise NonFiniteLossError(
        f"training stopped at {where}: {', '.join(bad) or 'the loss of another process'} is not finite. "
        f"{CAUSES} {NOT_WRITTEN}"
    )
