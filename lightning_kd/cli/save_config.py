"""Saving the config that ran, with the run's outputs and in each logger's run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.cli import SaveConfigCallback


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Write the config that ran beside the run's checkpoints, and store it in each logger's run.

    The file is ``config.yaml`` for ``fit`` and ``config-<subcommand>.yaml`` otherwise, in the run's folder (the
    ``ModelCheckpoint``'s; for an evaluation, the folder of the checkpoint it reads; else the logger's, else
    ``default_root_dir``), rather than one file every command overwrites.
    """

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        stage = str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
        self._pending = "config.yaml" if stage == "fit" else f"config-{stage}.yaml"

    def _write(self, trainer: Trainer) -> None:
        # once every setup check has passed: ModelCheckpoint warns about a folder holding files at setup, and the
        # W&B run is opened by the first log (a run refused at setup leaves no empty W&B run)
        name = self.__dict__.pop("_pending", None)
        if name is not None:
            folder = _run_folder(trainer)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, folder / name, skip_none=False, overwrite=True, multifile=False)
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, format="yaml"))
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": config})

    def on_fit_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._write(trainer)


def _run_folder(trainer: Trainer) -> Path:
    if trainer.state.fn != "fit" and trainer.ckpt_path:  # an evaluation of a run's checkpoint: in that run's folder
        return Path(trainer.ckpt_path).parent
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        return Path(checkpoint.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir)
