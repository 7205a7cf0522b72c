from __future__ import annotations

from typing import Any

from pytorch_lightning import Callback, Trainer


def cpu_trainer(**kwargs: Any) -> Trainer:
    """A quiet single-process CPU trainer for tests."""
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)


class KillAtEpoch(Callback):
    """Simulates a run killed at the start of an epoch (the last checkpoint is the previous epoch's end)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")
