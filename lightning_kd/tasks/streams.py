"""What every task does for networks that carry state across batches, and for schedules that watch a metric.

A recurrent language model carries its hidden state within one pass over a split (see
:mod:`lightning_kd.models.language`): :class:`StreamHooks` starts a fresh stream for each training epoch,
validation, test and prediction, and returns to the training stream after a validation in the middle of an
epoch. At the end of each validation it hands a :class:`~lightning_kd.optim.PlateauDecay` schedule its
monitored metric, before any checkpoint is written (so a resumed run decays as an uninterrupted one).
A task that overrides one of these hooks calls ``super()``.
"""

from __future__ import annotations

from typing import Any

from lightning_kd.compat import attached_trainer
from lightning_kd.models.language import begin_stream
from lightning_kd.optim import observe_monitored


class StreamHooks:
    """Mixin of :class:`~lightning_kd.tasks.base.BaseTask`: the streams of carried state, the plateau schedules."""

    val_metrics: Any

    def on_train_epoch_start(self) -> None:
        begin_stream(self, "train")  # type: ignore[arg-type]

    def on_validation_epoch_start(self) -> None:
        begin_stream(self, "val")  # type: ignore[arg-type]

    def on_validation_epoch_end(self) -> None:
        begin_stream(self, "train", fresh=False)  # type: ignore[arg-type]  # back where the training stream was
        trainer = attached_trainer(self)
        observe_monitored(self.lr_schedulers(), self.monitored_metrics(),  # type: ignore[attr-defined]
                          trainer is None or trainer.sanity_checking)

    def monitored_metrics(self) -> dict[str, Any]:
        """The validation metrics a plateau schedule may monitor, by logged name (``val/ppl``, ``val/acc``, ...)."""
        return dict(self.val_metrics.items(keep_base=False)) if hasattr(self, "val_metrics") else {}

    def on_test_epoch_start(self) -> None:
        begin_stream(self, "test")  # type: ignore[arg-type]

    def on_predict_epoch_start(self) -> None:
        begin_stream(self, "predict")  # type: ignore[arg-type]
