"""Checkpoints verified after writing: a failed or partial write stops the run instead of passing silently."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_kd.checkpoints import CheckpointError


class CheckpointWriteError(CheckpointError):
    """A checkpoint the run wrote is missing, stale or incomplete."""


def verify_checkpoint(path: str | Path, previous_mtime_ns: int | None = None) -> None:
    """Check that ``path`` holds a complete checkpoint, rewritten if it existed before (``previous_mtime_ns``).

    Reads the zip directory at the end of the file only (``torch.save``'s format): a truncated file
    has none. A file whose modification time did not change was never reached by the write.

    Raises:
        CheckpointWriteError: Naming what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointWriteError(f"checkpoint {path} was not written (is the folder writable?)")
    if previous_mtime_ns is not None and path.stat().st_mtime_ns == previous_mtime_ns:
        raise CheckpointWriteError(f"checkpoint {path} was not updated by this write (is the folder writable?)")
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointWriteError(f"checkpoint {path} is incomplete ({error}); is the disk full?") from error
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise CheckpointWriteError(f"checkpoint {path} is not a complete PyTorch checkpoint")


def check_checkpoint_to_read(path: str | Path, what: str = "--ckpt_path") -> None:
    """Refuse, in one line, a checkpoint to resume or evaluate that is missing, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{what} {path} is truncated or not a PyTorch checkpoint ({error})") from error
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise CheckpointError(f"{what} {path} is not a complete PyTorch checkpoint")


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with every file verified after it is written (:func:`verify_checkpoint`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        previous = target.stat().st_mtime_ns if target.is_file() else None
        super().save_checkpoint(checkpoint, path, storage_options)
        verify_checkpoint(path, previous)
