"""What every task logs while it trains: the loss and its parts, summed on the device, written when read.

Each ``self.log`` call costs Lightning a fraction of a millisecond of Python, which on a GPU is a large
share of a small network's step (``benchmarks/step_overhead.py``). So :class:`TrainingLog` sums every
value on the device, batch-weighted, and logs only what something reads:

* ``train/loss`` and each part as ``train/<part>_loss``: ``_step`` values on the steps the loggers
  write (and the loss every step while a progress bar shows it); ``_epoch`` means, and the plain names
  for callbacks and monitors, at the epoch's last batch (or at its end when ``max_steps`` cuts it short);
* the handed-on network's ``train/acc``, updated per batch and computed per epoch;
* a method's own scalars (``record``: a teacher's weight, say), as epoch means under their own names.
"""

from __future__ import annotations

from pytorch_lightning import LightningModule
from torch import Tensor, nn

from lightning_kd.compat import step_metrics_are_written
from lightning_kd.losses import flatten_positions
from lightning_kd.metrics import EpochSums, accuracy, training_metric_name


class TrainingLog(nn.Module):
    """The training log of one task (a module of the task, so its accuracy moves and syncs with it).

    Args:
        num_classes: The data's class count (for ``train/acc``).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.accuracy = accuracy(num_classes)
        self.losses = EpochSums()
        self.scalars = EpochSums()

    def _start_epoch_if_new(self, epoch: int) -> None:
        if self.losses.epoch != epoch:  # a new epoch (or fit): nothing carried over
            self.losses, self.scalars = EpochSums(epoch), EpochSums(epoch)
            self.accuracy.reset()

    def step(self, task: LightningModule, losses: dict[str, Tensor], logits: Tensor, target: Tensor) -> None:
        """Add one training batch: its losses (``{"loss": total, **parts}``) and the handed-on network's logits."""
        trainer = task.trainer
        self._start_epoch_if_new(trainer.current_epoch)
        logits, target = flatten_positions(logits.detach(), target)  # per token for sequences
        batch_size = len(target)
        named = {training_metric_name(name): value.detach() for name, value in losses.items()}
        self.losses.add(named, batch_size)
        self.accuracy.update(logits, target)  # the epoch's value only: no per-batch compute
        written = step_metrics_are_written(trainer)
        for key, value in named.items():
            shown = key == "train/loss" and trainer.progress_bar_callback is not None
            if written or shown:
                task.log(f"{key}_step", value, on_step=True, on_epoch=False, prog_bar=key == "train/loss",
                         batch_size=batch_size, sync_dist=True)
        if trainer.is_last_batch:
            self.end_epoch(task)

    def record(self, task: LightningModule, values: dict[str, Tensor], batch_size: int) -> None:
        """Add a method's own scalars for this batch (logged as batch-weighted epoch means, under their names)."""
        self._start_epoch_if_new(task.trainer.current_epoch)
        self.scalars.add({name: value.detach() for name, value in values.items()}, batch_size)

    def end_epoch(self, task: LightningModule) -> None:
        """Log the epoch's means and ``train/acc`` (once: a second call in the same epoch logs nothing)."""
        if not self.losses.samples:
            return
        for key, mean in self.losses.means().items():
            task.log(f"{key}_epoch", mean, on_step=False, on_epoch=True, sync_dist=True)
            task.log(key, mean, on_step=False, on_epoch=True, sync_dist=True, logger=False)
        for key, mean in self.scalars.means().items():
            task.log(key, mean, on_step=False, on_epoch=True, sync_dist=True)
        task.log("train/acc", self.accuracy.compute(), on_step=False, on_epoch=True)  # synced by torchmetrics
        self.losses, self.scalars = EpochSums(self.losses.epoch), EpochSums(self.losses.epoch)

    def extra_repr(self) -> str:
        return "summed on the device, logged when read"
