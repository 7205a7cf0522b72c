"""Every run writes into a folder of its own, and ``latest`` names the last one that finished."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from lightning_kd.errors import Refusal, check_folder_path

LATEST = "latest"


def new_run_folder(root: Path, name: str) -> Path:
    """Create and return ``root/name``, or ``root/name-2``, ``root/name-3``... if taken (atomically: two runs
    starting together get two folders).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> [new_run_folder(root, "kd-seed0").name for _ in range(3)]
        ['kd-seed0', 'kd-seed0-2', 'kd-seed0-3']
    """
    check_folder_path(root, "the output folder")
    if name in ("", ".", "..", LATEST) or "/" in name or os.sep in name:
        raise Refusal(f"{name!r} cannot name a run's folder")
    root.mkdir(parents=True, exist_ok=True)
    for count in range(1, 10_000):
        folder = root / (name if count == 1 else f"{name}-{count}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise Refusal(f"{root} holds 10,000 runs named {name}: choose another folder")


def point_latest(folder: Path) -> None:
    """Make ``<folder's parent>/latest`` a link to ``folder``, replacing the previous link atomically."""
    link = folder.parent / LATEST
    if link.exists() and not link.is_symlink():
        raise Refusal(f"{link} is not a link this package wrote: move it away so that it can name the latest run")
    temporary = folder.parent / f".{LATEST}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name, target_is_directory=True)  # relative: the tree can be moved
    os.replace(temporary, link)


class RunFolder(Callback):
    """Give each fit a folder of its own inside the ``ModelCheckpoint``'s folder, and link ``latest`` to it at the end.

    At setup, a new run takes ``<dirpath>/<name>`` (``<name>-2``, ``-3``... when taken; chosen once, by rank zero,
    for every DDP process) and every ``ModelCheckpoint`` writing into ``dirpath`` writes there instead, with every
    callback that writes beside them (:class:`~lightning_kd.callbacks.Generations`,
    :class:`~lightning_kd.callbacks.EpochCheckpoints`, the disk teacher cache, the saved config). A later run never
    replaces an earlier run's files. When the fit ends normally, ``<dirpath>/latest`` becomes a link to the folder,
    so that another config can name the last finished run's checkpoint (``checkpoints/digits_teacher/latest/
    teacher.ckpt``); a failed or interrupted run leaves it as it was. A resumed run continues in its checkpoint's
    folder (``folder``).

    The command line adds it to every ``fit`` whose config names a ``ModelCheckpoint`` folder.

    Args:
        name: The run's name (the command line gives the W&B run's: method, variant, network, seed).
        folder: The folder of the run being resumed (its checkpoint's), instead of a new one.
    """

    def __init__(self, name: str, folder: str | Path | None = None) -> None:
        self.name = name
        self.resumed = Path(folder) if folder is not None else None
        self.folder: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run:  # a dry run writes nothing
            return
        checkpoints = [c for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)]
        if not checkpoints:
            return
        root = Path(checkpoints[0].dirpath)
        if self.resumed is not None:
            folder = self.resumed.resolve()
        else:
            folder = new_run_folder(root, self.name) if trainer.is_global_zero else None
            folder = trainer.strategy.broadcast(folder)
        for callback in checkpoints:  # those writing into the runs' folder now write into this run's
            if Path(callback.dirpath) in (root, root.resolve()):
                callback.dirpath = str(folder)
        self.folder = Path(folder)
        rank_zero_info(f"This run writes into {self.folder}")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # a run refused before its first step leaves no folder behind: at most the config it would have run
        # (written at the fit's start, before Lightning's last checks of the data); a resumed run's is kept
        if self.folder is None or self.resumed is not None or not trainer.is_global_zero or not self.folder.is_dir():
            return
        if trainer.global_step == 0 and {p.name for p in self.folder.iterdir()} <= {"config.yaml"}:
            shutil.rmtree(self.folder)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.folder is not None and trainer.is_global_zero and not trainer.interrupted:
            point_latest(self.folder)
