"""Loggers organised for distillation runs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

from lightning_kd.compat import wandb_init_arguments
from lightning_kd.errors import check_folder_path


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, with the run organised by the ``lightning-kd`` command line.

    ``offline`` left unset follows ``WANDB_MODE`` (``online``, ``offline``, ``disabled``), and is offline when that
    is unset too: a run needs no account unless asked. To go online: ``wandb login``, then
    ``WANDB_MODE=online lightning-kd fit ...`` (or ``--trainer.logger.init_args.offline false``).

    Left unset, the CLI fills in ``name`` (method, its variant, seed: ``bornagain-ban+l-seed0``),
    ``group`` (the config file's name, so the runs of one config sit together), ``job_type`` (the
    subcommand: ``fit``, ``test``, ...) and ``tags`` (method, variant, data). ``test``, ``validate``
    and ``predict`` with ``--ckpt_path`` resume the run that wrote the checkpoint (its id is in the
    checkpoint). Everything else is Lightning's logger (``offline``, ``project``, ``save_dir``...).

    Args:
        name: Run name.
        project: W&B project.
        save_dir: Where W&B writes its files.
        offline: Log locally only (``wandb sync`` uploads later); ``None``: as ``WANDB_MODE`` says, else offline.
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
        offline: bool | None = None,
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
        if offline is None:  # the config does not say: W&B's own variable does, offline when it is unset
            offline = os.environ.get("WANDB_MODE", "offline").lower() in ("offline", "dryrun")
        self.offline = offline
        super().__init__(name=name, project=project, save_dir=save_dir, offline=offline, group=group,
                         job_type=job_type, tags=tags, **kwargs)
        arguments = wandb_init_arguments(self)
        if arguments.get("anonymous") is None:  # wandb warns about the key even when it is None
            arguments.pop("anonymous", None)


def finish_failed_wandb_run(exit_code: int, refused: bool = False) -> None:
    """Mark the process's W&B run, if one is open, as failed with ``exit_code`` (W&B would record 0: the process
    has not exited yet when Lightning's logger finalizes).

    A ``refused`` start that logged nothing (Lightning opens the run before the setup checks) leaves no run: an
    offline run's folder is removed (nothing was uploaded); an online one stays, marked failed.
    """
    wandb = sys.modules.get("wandb")  # never imported: no run to mark
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    empty = refused and run.offline and run.step == 0
    folder = Path(run.dir).parent if empty else None
    wandb.finish(exit_code=exit_code)
    if folder is not None and folder.name.startswith("offline-run-"):
        shutil.rmtree(folder, ignore_errors=True)


def wandb_run_reference(trainer: pl.Trainer | None) -> dict[str, str] | None:
    """``{"id", "project"}`` of the trainer's W&B run (rank zero has it), for a checkpoint to record.

    ``test``, ``validate`` and ``predict`` from that checkpoint continue the run that wrote it.
    """
    loggers = trainer.loggers if trainer is not None else []
    runs = [logger.experiment for logger in loggers if isinstance(logger, LightningWandbLogger)]
    run_id = getattr(runs[0], "id", None) if runs else None
    return {"id": run_id, "project": runs[0].project} if isinstance(run_id, str) else None
