"""Nothing non-finite is trained on, scored or saved: the checks every task makes, and when.

A loss can stay finite while the weights diverge (BatchNorm normalises huge activations back), and finite
weights can still give non-finite outputs (weights of 1e23 overflow a product). So every task checks:

* at every training step, the loss and the trained weights the previous step left (one check, one
  synchronisation: :func:`~lightning_kd.guards.stop_if_not_finite`);
* before every validation and test, the trained weights (the last step's update is checked there);
* at the end of every validation and test, that none of the handed-on network's outputs was NaN or infinite
  (counted on the device, summed over DDP processes once per evaluation);
* before any checkpoint is written, the trained weights: :meth:`on_save_checkpoint` runs on every path
  (``ModelCheckpoint``, ``trainer.save_checkpoint``, the CLI), so no checkpoint of such weights exists.

Each stops the run with one line (a :class:`~lightning_kd.errors.NonFiniteLossError`) naming what is not
finite. A task that overrides ``on_validation_epoch_end`` or ``on_test_epoch_end`` calls ``super()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_kd.compat import attached_trainer
from lightning_kd.guards import stop_if_outputs_not_finite, stop_if_weights_not_finite


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

    def _where(self, what: str) -> str:
        trainer = attached_trainer(self)  # type: ignore[arg-type]
        return f"{what} at epoch {trainer.current_epoch}" if trainer is not None else what

    def check_weights(self, before: str) -> None:
        """Stop if a trained weight is not finite, ``before`` something would use or keep it."""
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
