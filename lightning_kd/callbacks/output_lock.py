"""One run at a time per output folder: a lock file naming its owner, stale locks detected."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from lightning_kd.errors import Refusal, check_folder_path

LOCK_SUFFIX = ".lightning-kd.lock"


def lock_path(folder: Path) -> Path:
    """The lock of ``folder``: a hidden file beside it (inside, it would make the folder look used)."""
    folder = folder.resolve()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


class FolderLockedError(Refusal, RuntimeError):
    """Another live run is writing the output folder."""


class OutputLock(Callback):
    """Refuse to start a fit into an output folder that another live run is writing.

    At setup, rank zero creates ``.<folder>.lightning-kd.lock`` beside the folder (atomically) holding its host, PID,
    start time and command; it is removed when the fit ends, however it ends. A lock left by a run on
    this host whose process is gone (killed, crashed) is stale: it is replaced, with a warning. A lock
    of a live process, or of another host (whose processes cannot be checked from here), stops the
    run before training with a message naming its owner. Creating the lock also proves the folder
    writable before any training.

    Args:
        folder: The folder to lock (default: the ``ModelCheckpoint``'s ``dirpath``; without one,
            nothing is locked).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = folder
        self.held: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.held is not None:
            return
        folder = self._folder(trainer)
        if folder is not None:
            self.held = acquire(folder)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._release()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._release()

    def _release(self) -> None:
        if self.held is not None:
            release(self.held)
            self.held = None

    def _folder(self, trainer: pl.Trainer) -> Path | None:
        if self.folder is not None:
            return Path(self.folder)
        checkpoint = trainer.checkpoint_callback
        dirpath = getattr(checkpoint, "dirpath", None) if checkpoint is not None else None
        return Path(dirpath) if dirpath else None


def owner() -> dict[str, Any]:
    """This process as a lock owner."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)}


def acquire(folder: Path, what: str = "the output folder") -> Path:
    """Take ``folder``'s lock, replacing a stale one; return the lock file.

    Raises:
        FolderLockedError: A live run (or one on another host) holds it.
        Refusal: ``what`` cannot be a folder (a file is on its path).
        PermissionError: The folder cannot be written.
    """
    check_folder_path(folder, what)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):  # the folder itself is writable, before any training
        pass
    path = lock_path(folder)
    me = owner()
    for _ in range(2):  # a second try after removing a stale lock
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None or not _alive(holder):
                rank_zero_warn(f"removing a stale lock in {folder}: {_describe(holder)} is no longer running")
                path.unlink(missing_ok=True)
                continue
            raise FolderLockedError(
                f"{folder} is being written by another run ({_describe(holder)}); give this run another "
                f"folder (e.g. --trainer.callbacks.dirpath / the ModelCheckpoint's dirpath) or wait for it; "
                f"if that run is gone, delete {path}"
            ) from None
        with os.fdopen(descriptor, "w") as handle:
            json.dump(me, handle)
        return path
    raise FolderLockedError(f"could not take the lock {path}")


def release(path: Path) -> None:
    """Remove a lock this process holds (another owner's lock is left alone)."""
    holder = _read(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "an unreadable lock"
    return f"PID {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}: {holder.get('command')}"
