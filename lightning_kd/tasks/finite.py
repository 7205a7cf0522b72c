"""Nothing non-finite is trained on, scored or saved: the checks every task makes, and when.

A loss can stay finite while the weights diverge (BatchNorm normalises huge activations back), and finite
weights can still give non-finite outputs (weights of 1e23 overflow a product). So every task checks:

* at every training step, every loss, and every ``log_every_n_steps`` steps
  (:attr:`FiniteChecks.finite_check_every_n_steps`), the trained weights the previous step left, by their norms
  in one fused pass (:func:`~lightning_kd.guards.finite_flags`). Reading a flag synchronises with the device,
  which a CPU does for free and a GPU pays for with its queue: on a CPU the losses are read at their own step;
  elsewhere the flags are combined on the device and read with the weights' check, so none is missed. A flag
  found false leads to the exact check (:func:`~lightning_kd.guards.stop_if_not_finite`), which names what is
  not finite;
* before every validation and test and at every epoch's end, the flags not read yet and the trained weights
  (exactly: the last steps' updates are checked there);
* at the end of every validation and test, that none of the handed-on network's outputs was NaN or infinite
  (counted on the device, summed over DDP processes once per evaluation);
* before any checkpoint is written, the flags not read yet and the trained weights: :meth:`on_save_checkpoint`
  runs on every path (``ModelCheckpoint``, ``trainer.save_checkpoint``, the CLI), so no checkpoint of such
  weights exists.

Each stops the run with one line (a :class:`~lightning_kd.errors.NonFiniteLossError`) naming what is not
finite. A task that overrides ``on_validation_epoch_end`` or ``on_test_epoch_end`` calls ``super()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_kd.compat import attached_trainer
from lightning_kd.errors import NonFiniteLossError, NonFiniteWeightsError
from lightning_kd.guards import (
    CAUSES,
    NOT_WRITTEN,
    describe_not_finite,
    finite_flags,
    largest_magnitudes,
    stop_if_not_finite,
    stop_if_outputs_not_finite,
    stop_if_weights_not_finite,
)


class FiniteChecks:
    """Mixin of :class:`~lightning_kd.tasks.base.BaseTask`: the non-finite checks of weights and outputs."""

    handed_on: str
    trained_networks: Any

    def trained_weights(self) -> dict[str, Tensor]:
        """Every trained network's parameters that train and its floating-point buffers, by ``role.name``."""
        weights, seen = {}, set()
        for role, network in self.trained_networks().items():
            named = [*((n, p) for n, p in network.named_parameters() if p.requires_grad),
                     *((n, b) for n, b in network.named_buffers() if b.is_floating_point())]
            for name, tensor in named:
                if id(tensor) not in seen:  # tied weights once
                    seen.add(id(tensor))
                    weights[f"{role}.{name}"] = tensor
        return weights

    finite_check_every_n_steps: int | None = None
    """Training steps between two checks of the trained weights (and, off a CPU, two reads of the flags, each of
    which synchronises with the device). ``None``: the trainer's ``log_every_n_steps``."""

    read_losses_at_their_step: bool | None = None
    """Whether each step reads its losses' flag at once (a device synchronisation). ``None``: on a CPU only,
    where a read costs nothing; elsewhere the flags wait on the device for the next check of the weights."""

    def finite_check_interval(self) -> int:
        """Training steps between two checks of the weights (see :attr:`finite_check_every_n_steps`)."""
        if self.finite_check_every_n_steps is not None:
            return max(1, int(self.finite_check_every_n_steps))
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        return max(1, trainer.log_every_n_steps) if trainer is not None else 1

    def _step_weights(self) -> list[Tensor]:
        # built once per epoch and set of trained networks (a Born-Again generation swaps its student)
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        key = (trainer.current_epoch if trainer is not None else None,
               tuple(id(network) for network in self.trained_networks().values()))
        cached = self.__dict__.get("_step_weights_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_step_weights_cache"] = (key, list(self.trained_weights().values()))
        return cached[1]

    def check_training_step(self, losses: dict[str, Tensor], weights: bool = True) -> None:
        """Stop if a loss of this step is not finite, or (``weights``, on the checking steps) a trained weight that
        the previous steps left.

        Every training step calls this before its optimizer steps. On a CPU the losses are read now; elsewhere
        their flags are combined on the device with those not read yet. Every :meth:`finite_check_interval` steps
        (counted over the calls with ``weights``) the weights are checked too and every flag is read; the flags
        not read yet are read before the next validation, test, checkpoint or epoch end.
        """
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        unread = self.__dict__.get("_unread")
        if unread is None:
            unread = self.__dict__["_unread"] = _Unread(trainer.global_step if trainer is not None else 0)
        unread.steps += 1
        unread.weight_steps += weights
        due = weights and unread.weight_steps >= self.finite_check_interval()
        read_now = self.read_losses_at_their_step
        if read_now is None:
            read_now = self.device.type == "cpu"  # type: ignore[attr-defined]
        if read_now:  # every loss now
            finite = all(math.isfinite(v.item()) if v.numel() == 1 else bool(torch.isfinite(v.detach()).all())
                         for v in losses.values())
            if due:
                finite = finite and bool(finite_flags(self._step_weights()).all())
            if trainer is not None and trainer.world_size > 1:
                finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
            if not finite:  # the exact check names what (and lets a huge but finite weight through)
                stop_if_not_finite(losses, trainer, self.trained_weights() if due else None)
            if due:
                self.__dict__.pop("_unread")
            return
        with torch.no_grad():  # a few launches a step, no read: the losses' flag, and on checking steps the weights'
            losses_finite = torch.isfinite(torch.stack([v.detach().float().sum() for v in losses.values()])).all()
            weights_finite = finite_flags(self._step_weights()).all() if due else None
        unread.add(losses_finite, weights_finite)
        if due:
            self.read_finite_flags()

    def read_finite_flags(self) -> None:
        """Read the non-finite flags of the training steps not read yet, and stop if one was false.

        The steps' losses are gone by now: a loss stops the run naming the steps it was among; the weights are
        checked again, exactly, and named. Under DDP every process reads at the same steps and every process stops.
        """
        unread: _Unread | None = self.__dict__.pop("_unread", None)
        if unread is None or unread.flags is None:
            return
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        distributed = trainer is not None and trainer.world_size > 1
        loss_finite, weights_finite = (bool(v) for v in unread.flags.tolist())  # one read for both
        finite = loss_finite and weights_finite
        if distributed:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        weights = self.trained_weights()
        magnitudes = largest_magnitudes(weights)
        weights_finite = bool(torch.isfinite(magnitudes).all())  # a huge finite weight's norm can overflow
        failed = not (loss_finite and weights_finite)
        if distributed and not trainer.strategy.reduce_boolean_decision(not failed, all=True):
            failed = True
        if not failed:
            return
        read = f"read every {self.finite_check_interval()} steps on this device"
        epoch = f" (epoch {trainer.current_epoch})" if trainer is not None else ""
        where = f"training stopped at step {unread.since + unread.steps - 1}{epoch}"
        steps = f"one of the {unread.steps} steps from step {unread.since}"
        if not loss_finite:
            raise NonFiniteLossError(f"{where}: a loss was not finite at {steps} ({read}). {CAUSES} {NOT_WRITTEN}")
        if not weights_finite:
            raise NonFiniteWeightsError(f"{where}: weights are not finite although every loss since step "
                                        f"{unread.since} was ({read}; BatchNorm can hide a divergence): "
                                        f"{describe_not_finite(weights, magnitudes)}. {CAUSES} {NOT_WRITTEN}")
        raise NonFiniteLossError(f"{where}: another process found a loss or a weight not finite at {steps} ({read}). "
                                 f"{CAUSES} {NOT_WRITTEN}")

    def _where(self, what: str) -> str:
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        return f"{what} at epoch {trainer.current_epoch}" if trainer is not None else what

    def check_weights(self, before: str) -> None:
        """Stop if a trained weight is not finite (or a training step's flag not read yet is false), ``before``
        something would use or keep it."""
        self.read_finite_flags()
        stop_if_weights_not_finite(self.trained_weights(), self._where(f"before {before}"))

    def count_nonfinite_outputs(self, logits: Tensor) -> Tensor:
        """Count, on the device and without synchronising, the outputs (samples or positions) that are not finite."""
        bad = (~torch.isfinite(logits.detach())).flatten(1 if logits.ndim > 1 else 0)
        per_output = bad.any(dim=-1) if logits.ndim > 1 else bad
        counts = torch.stack([per_output.sum(), torch.tensor(per_output.numel(), device=per_output.device)])
        self._nonfinite_outputs = counts + getattr(self, "_nonfinite_outputs", 0)
        return logits

    def _check_outputs(self, stage: str) -> None:
        counts = self.__dict__.pop("_nonfinite_outputs", None)
        if counts is None:
            return
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        if trainer is not None and trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        bad, total = (int(v) for v in counts.tolist())
        stop_if_outputs_not_finite(bad, total, self.handed_on, self._where(stage), self.trained_weights())

    # -- hooks ------------------------------------------------------------------------------------
    def on_validation_start(self) -> None:
        self.__dict__.pop("_nonfinite_outputs", None)
        self.check_weights("validation")

    def on_test_start(self) -> None:
        self.__dict__.pop("_nonfinite_outputs", None)
        self.check_weights("testing")

    def on_validation_epoch_end(self) -> None:
        self._check_outputs("validation")
        super().on_validation_epoch_end()  # type: ignore[misc]

    def on_test_epoch_end(self) -> None:
        self._check_outputs("test")
        super().on_test_epoch_end()  # type: ignore[misc]


@dataclass
class _Unread:
    """The training steps whose non-finite flags were not read yet (from step ``since``)."""

    since: int
    steps: int = 0
    weight_steps: int = 0
    losses: Tensor | None = None  # every loss finite over those steps, on the device
    weights: Tensor | None = None  # every weight finite at their checks

    def add(self, losses: Tensor, weights: Tensor | None) -> None:
        self.losses = losses if self.losses is None else self.losses & losses
        if weights is not None:
            self.weights = weights if self.weights is None else self.weights & weights

    @property
    def flags(self) -> Tensor | None:
        """``[every loss finite, every weight finite]``, or ``None`` before any step added its flags."""
        if self.losses is None:
            return None
        return torch.stack([self.losses, self.weights if self.weights is not None else torch.ones_like(self.losses)])
