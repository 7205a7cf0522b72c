"""What every task logs while it trains: the loss and its parts, summed on the device, written when read.

Each ``self.log`` call costs Lightning a fraction of a millisecond of Python, and each tensor operation a few
microseconds, which on a GPU is a large share of a small network's step (``benchmarks/step_overhead.py``).
So :class:`TrainingLog` sums every value on the device, batch-weighted, in a few operations a step, and logs
only what something reads:

* ``train/loss`` and each part as ``train/<part>_loss``: ``_step`` values on the steps the loggers
  write (and, on a CPU, the loss every step while a progress bar shows it); ``_epoch`` means, and the plain names
  for callbacks and monitors, at the epoch's last batch (or at its end when ``max_steps`` cuts it short);
* the handed-on network's ``train/acc`` (top-1), counted per batch and divided per epoch;
* a method's own scalars (``record``: a teacher's weight, say), as epoch means under their own names.

Under DDP the epoch's sums and sample counts are added over the processes before they are divided: every
mean is the exact mean over every sample of the epoch, whatever each process saw.
"""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule
from torch import Tensor, nn

from lightning_kd.compat import attached_trainer, step_metrics_are_written
from lightning_kd.losses import flatten_positions
from lightning_kd.metrics import EpochSums, training_metric_name


class TrainingLog(nn.Module):
    """The training log of one task (a module of the task, so it moves with it; it holds no state to save)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses = EpochSums()
        self.scalars = EpochSums()

    def _start_epoch_if_new(self, epoch: int) -> None:
        if self.losses.epoch != epoch:  # a new epoch (or fit): nothing carried over
            self.losses, self.scalars = EpochSums(epoch), EpochSums(epoch)

    def step(self, task: LightningModule, losses: dict[str, Tensor], logits: Tensor, target: Tensor) -> None:
        """Add one training batch: its losses (``{"loss": total, **parts}``) and the handed-on network's logits."""
        trainer = task.trainer
        self._start_epoch_if_new(trainer.current_epoch)
        logits, target = flatten_positions(logits.detach(), target)  # per token for sequences
        batch_size = len(target)
        # max's indices are argmax's (the first maximum): 60% of argmax's cost on a Xeon, more on an AMD EPYC
        correct = (logits.max(-1).indices == target).sum(dtype=torch.float32)
        self.losses.add(losses, batch_size, counts={"train/acc": correct})
        written = step_metrics_are_written(trainer)
        # a bar shows the loss every step on a CPU; off a CPU it reads metrics on the logging steps only (a read
        # would wait for the device's queue: KDProgressBar)
        shown = trainer.progress_bar_callback is not None and logits.device.type == "cpu"
        if written or shown:
            for name, value in losses.items():
                key = training_metric_name(name)
                if written or key == "train/loss":
                    task.log(f"{key}_step", value.detach(), on_step=True, on_epoch=False,
                             prog_bar=key == "train/loss", batch_size=batch_size, sync_dist=True)
        if trainer.is_last_batch:
            self.end_epoch(task)

    def record(self, task: LightningModule, values: dict[str, Tensor], batch_size: int) -> None:
        """Add a method's own scalars for this batch (logged as batch-weighted epoch means, under their names)."""
        self._start_epoch_if_new(task.trainer.current_epoch)
        self.scalars.add(values, batch_size)

    def end_epoch(self, task: LightningModule) -> None:
        """Log the epoch's means and ``train/acc`` (once: a second call in the same epoch logs nothing)."""
        if not self.losses.samples:
            return
        trainer = attached_trainer(task)
        reduce = trainer.strategy.reduce if trainer is not None and trainer.world_size > 1 else None
        means = self.losses.means(reduce)
        accuracy = means.pop("train/acc")
        for name, mean in means.items():
            key = training_metric_name(name)
            task.log(f"{key}_epoch", mean, on_step=False, on_epoch=True, sync_dist=True)
            task.log(key, mean, on_step=False, on_epoch=True, sync_dist=True, logger=False)
        for key, mean in self.scalars.means(reduce).items():
            task.log(key, mean, on_step=False, on_epoch=True, sync_dist=True)
        # the processes' values are equal already (summed above): sync_dist averages equals, and keeps Lightning quiet
        task.log("train/acc", accuracy, on_step=False, on_epoch=True, sync_dist=True)
        self.losses, self.scalars = EpochSums(self.losses.epoch), EpochSums(self.losses.epoch)

    def extra_repr(self) -> str:
        return "summed on the device, logged when read"


__all__ = ["TrainingLog"]
