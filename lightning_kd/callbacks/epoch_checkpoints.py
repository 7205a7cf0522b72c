"""The weights after chosen epochs, kept as checkpoints: e.g. a poorly trained teacher for De-KD."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_kd.errors import Refusal, check_folder_path
from lightning_kd.reporting import percent


def checkpoint_folder(trainer: pl.Trainer, dirpath: str | Path | None = None) -> Path:
    """Where a callback writes its files: ``dirpath``; else the ``ModelCheckpoint``'s folder; else
    ``<default_root_dir>/checkpoints``."""
    if dirpath is not None:
        return Path(dirpath)
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        return Path(checkpoint.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def rewritten_files(trainer: pl.Trainer) -> dict[Path, str]:
    """The files the run's ``ModelCheckpoint`` callbacks rewrite under a fixed name (their ``filename`` without a
    placeholder, and ``last``), each with the callback that writes it."""
    files = {}
    for callback in trainer.checkpoint_callbacks:
        dirpath = getattr(callback, "dirpath", None)
        if not dirpath:
            continue
        extension = getattr(callback, "FILE_EXTENSION", ".ckpt")
        names = [callback.filename] if callback.filename and "{" not in callback.filename else []
        if getattr(callback, "save_last", False) and "{" not in callback.CHECKPOINT_NAME_LAST:
            names.append(callback.CHECKPOINT_NAME_LAST)
        for name in names:
            files[(Path(dirpath) / f"{name}{extension}").resolve()] = type(callback).__name__
    return files


class EpochCheckpoints(Callback):
    """Keep the weights as they are after each of ``epochs`` (counted from 1 over the whole fit).

    A checkpoint written here is a ready teacher (``teacher_ckpt``), like any the package writes: a
    "poorly trained teacher" for De-KD is then the real state of an ordinary run after, say, one
    epoch, with its validation accuracy printed and stored in the file (``epoch`` and
    ``lightning_kd_epoch_checkpoint``). The run refuses to start when an epoch lies past
    ``trainer.max_epochs``, and warns when it stops before writing every file.

    Args:
        epochs: The epochs after which to keep the weights (1 = after the first epoch).
        dirpath: The folder (default: the ``ModelCheckpoint``'s, else ``<default_root_dir>/checkpoints``).
        filename: The file name without ``.ckpt``; ``{epoch}`` becomes the epoch.

    Example:
        >>> EpochCheckpoints(epochs=[1, 5]).epochs
        [1, 5]
        >>> EpochCheckpoints(epochs=0)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: EpochCheckpoints: epochs are counted from 1 (1 = after the first epoch), got [0]
    """

    RECORD_KEY = "lightning_kd_epoch_checkpoint"

    def __init__(self, epochs: int | Sequence[int], dirpath: str | Path | None = None,
                 filename: str = "after_epoch_{epoch}") -> None:
        chosen = [epochs] if isinstance(epochs, int) else list(epochs)
        if not chosen or any(not isinstance(e, int) or isinstance(e, bool) or e < 1 for e in chosen):
            raise Refusal(f"EpochCheckpoints: epochs are counted from 1 (1 = after the first epoch), got {chosen}")
        if "{epoch}" not in filename and len(chosen) > 1:
            raise Refusal(f"EpochCheckpoints: filename {filename!r} needs '{{epoch}}' to keep several epochs apart")
        self.epochs = sorted(set(chosen))
        self.dirpath = dirpath
        self.filename = filename
        self.written: dict[int, str] = {}

    def path(self, trainer: pl.Trainer, epoch: int) -> Path:
        """The file the weights after ``epoch`` go to."""
        return checkpoint_folder(trainer, self.dirpath) / f"{self.filename.format(epoch=epoch)}.ckpt"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # at fit start, not setup: a Generations callback sets max_epochs in its own setup
        late = [e for e in self.epochs if trainer.max_epochs is not None and 0 <= trainer.max_epochs < e]
        if late:
            raise Refusal(f"EpochCheckpoints: epoch(s) {late} lie past trainer.max_epochs={trainer.max_epochs}; "
                             "these weights would never be written")
        check_folder_path(checkpoint_folder(trainer, self.dirpath), "EpochCheckpoints' folder")
        rewritten = rewritten_files(trainer)
        for epoch in self.epochs:
            path = self.path(trainer, epoch).resolve()
            if path in rewritten:
                raise Refusal(f"EpochCheckpoints: the weights after epoch {epoch} would go to {path}, the file "
                              f"{rewritten[path]} rewrites as the run goes on: give EpochCheckpoints another filename")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook: its metrics belong to these weights
        epoch = trainer.current_epoch + 1
        if epoch not in self.epochs or trainer.sanity_checking or trainer.fast_dev_run:
            return
        path = self.path(trainer, epoch)
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                   if key.startswith("val/") and value.numel() == 1}
        self._record = {"epoch": epoch, "val": metrics}
        try:
            # a full checkpoint: Lightning calls the callbacks' on_save_checkpoint (the record) for those only
            trainer.save_checkpoint(path)  # every rank calls it; rank zero writes
        finally:
            del self._record
        self.written[epoch] = str(path)
        accuracy = f" (val/acc {percent(metrics['val/acc'])}%)" if "val/acc" in metrics else ""
        rank_zero_info(f"kept the weights after epoch {epoch}{accuracy}: {path}")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        record = getattr(self, "_record", None)
        if record is not None:  # only in the files this callback writes
            checkpoint[self.RECORD_KEY] = record

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        missing = [e for e in self.epochs if e not in self.written]
        if missing and not trainer.fast_dev_run:
            rank_zero_warn(f"EpochCheckpoints: training ended after epoch {trainer.current_epoch}; the weights "
                           f"after epoch(s) {missing} were not written")

    def state_dict(self) -> dict[str, Any]:
        return {"written": dict(self.written)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.written = {int(e): p for e, p in state_dict.get("written", {}).items()}
