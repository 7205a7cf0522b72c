"""Loggers organised for distillation runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

from lightning_kd.compat import wandb_init_arguments
from lightning_kd.errors import check_folder_path


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, with the run organised by the ``lightning-kd`` command line.

    Left unset, the CLI fills in ``name`` (method, its variant, seed: ``bornagain-ban+l-seed0``),
    ``group`` (the config file's name, so the runs of one config sit together), ``job_type`` (the
    subcommand: ``fit``, ``test``, ...) and ``tags`` (method, variant, data). ``test``, ``validate``
    and ``predict`` with ``--ckpt_path`` resume the run that wrote the checkpoint (its id is in the
    checkpoint). Everything else is Lightning's logger (``offline``, ``project``, ``save_dir``...).

    Args:
        name: Run name.
        project: W&B project.
        save_dir: Where W&B writes its files.
        offline: Log locally only (``wandb sync`` uploads later).
        group: Run group.
        job_type: Job type.
        tags: Run tags.
        **kwargs: Passed on to Lightning's ``WandbLogger`` (and ``wandb.init``).
    """

    def __init__(
        self,
        name: str | None = None,
        project: str | None = "lightning-kd",
        save_dir: str | Path = "runs",
        offline: bool = False,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # absolute: W&B's service process resolves relative paths from its own working directory, the one
        # of the first run in the process; and wandb warns when the folder does not exist yet
        save_dir = Path(save_dir).resolve()
        check_folder_path(save_dir, "the W&B folder (save_dir)")  # one line, not wandb's traceback
        save_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(name=name, project=project, save_dir=save_dir, offline=offline, group=group,
                         job_type=job_type, tags=tags, **kwargs)
        arguments = wandb_init_arguments(self)
        if arguments.get("anonymous") is None:  # wandb warns about the key even when it is None
            arguments.pop("anonymous", None)


def wandb_run_reference(trainer: pl.Trainer | None) -> dict[str, str] | None:
    """``{"id", "project"}`` of the trainer's W&B run (rank zero has it), for a checkpoint to record.

    ``test``, ``validate`` and ``predict`` from that checkpoint continue the run that wrote it.
    """
    loggers = trainer.loggers if trainer is not None else []
    runs = [logger.experiment for logger in loggers if isinstance(logger, LightningWandbLogger)]
    run_id = getattr(runs[0], "id", None) if runs else None
    return {"id": run_id, "project": runs[0].project} if isinstance(run_id, str) else None
