"""Progress that reads well in a terminal and in a log file, with the method's own position in it."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.utilities import rank_zero_only

from lightning_kd.compat import OneBasedRichProgressBar, step_metrics_are_written
from lightning_kd.errors import Refusal
from lightning_kd.reporting import percent

SHOWN_METRICS = ("val/ppl", "val/acc")
"""Epoch-level metrics shown beside the losses: validation perplexity (language models) and accuracy (in percent)."""


def progress_items(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, str]:
    """The method's own position (``generation 1/3``, ...) and the shown metrics, as text."""
    position = getattr(pl_module, "progress_items", None)
    items = dict(position()) if callable(position) else {}
    for key in SHOWN_METRICS:
        value = trainer.callback_metrics.get(key)
        if value is not None:
            items[key] = f"{float(value):.2f}" if key.endswith("/ppl") else f"{percent(float(value))}%"
    return items


class KDProgressBar(OneBasedRichProgressBar):
    """Lightning's rich bar, with the method's position (e.g. the generation) and validation accuracy.

    Epochs count from 1 (``Epoch 3/80``), as in :class:`EpochLines` and the run's summary. Reading a metric off a
    GPU waits for its queue, so while training on one the bar advances every step but reads its metrics on the
    logging steps only (every ``log_every_n_steps``); on a CPU, every step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: dict[str, Any] | None = None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if (self._shown is not None and trainer.training and pl_module.device.type != "cpu"
                and not step_metrics_are_written(trainer)):
            return self._shown
        self._shown = {**progress_items(trainer, pl_module), **super().get_metrics(trainer, pl_module)}
        return self._shown


class EpochLines(ProgressBar):
    """Progress for logs (``nohup``, SLURM): one line per epoch, or every ``every_n_steps`` training steps.

    Example line::

        epoch 3/80 | generation 0/3 | train/loss 0.3121 | val/acc 96.67% | 0.4 s

    Args:
        every_n_steps: Also print a line every this many training steps (default: epoch ends only).
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise Refusal(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._started = time.monotonic()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._line(trainer, pl_module, f"step {trainer.global_step}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = "" if trainer.max_epochs is None or trainer.max_epochs < 0 else f"/{trainer.max_epochs}"
        self._line(trainer, pl_module, f"epoch {trainer.current_epoch + 1}{last}")

    @rank_zero_only
    def _line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, where: str) -> None:
        if not self._enabled:
            return
        losses = {key: value for key, value in trainer.callback_metrics.items()
                  if key.startswith("train/") and key.endswith("loss_epoch")}
        parts = [where, *(f"{k} {v}" for k, v in progress_items(trainer, pl_module).items())]
        parts += [f"{key.removesuffix('_epoch')} {float(value):.4f}" for key, value in losses.items()
                  if isinstance(value, (torch.Tensor, float))]
        parts.append(f"{time.monotonic() - self._started:.1f} s")
        print(" | ".join(parts), flush=True)
