"""Checkpoints verified after writing: a failed or partial write stops the run instead of passing silently."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_kd.checkpoints import CheckpointError


class CheckpointWriteError(CheckpointError):
    """A checkpoint the run wrote is missing, stale or incomplete."""


def verify_checkpoint(path: str | Path, previous_mtime_ns: int | None = None, shown: str | Path | None = None) -> None:
    """Check that ``path`` holds a complete checkpoint, rewritten if it existed before (``previous_mtime_ns``).

    Reads the zip directory at the end of the file only (``torch.save``'s format): a truncated file
    has none. A file whose modification time did not change was never reached by the write. ``shown`` is the
    name the messages give (the target of a write made through a temporary file).

    Raises:
        CheckpointWriteError: Naming what is wrong.
    """
    path, name = Path(path), shown or path
    if not path.is_file():
        raise CheckpointWriteError(f"checkpoint {name} was not written (is the folder writable?)")
    if previous_mtime_ns is not None and path.stat().st_mtime_ns == previous_mtime_ns:
        raise CheckpointWriteError(f"checkpoint {name} was not updated by this write (is the folder writable?)")
    unreadable, problem = archive_problem(path)
    if unreadable:
        raise CheckpointWriteError(f"checkpoint {name} is incomplete ({problem}); is the disk full?")
    if problem:
        raise CheckpointWriteError(f"checkpoint {name} is {problem}")


def check_checkpoint_to_read(path: str | Path, what: str = "--ckpt_path") -> None:
    """Refuse, in one line, a checkpoint to resume or evaluate that is missing, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    unreadable, problem = archive_problem(path)
    if unreadable:
        raise CheckpointError(f"{what} {path} is truncated or not a PyTorch checkpoint ({problem})")
    if problem:
        raise CheckpointError(f"{what} {path} is {problem}")


def archive_problem(path: Path) -> tuple[bool, str | None]:
    """What is wrong with the ``torch.save`` archive at ``path``, from its zip directory only (at the end of the
    file: a truncated file has none): ``(True, the zip error)`` when it cannot be read, ``(False, what)`` when it
    lacks the pickled data, ``(False, None)`` when complete."""
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return True, str(error)
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return False, "not a complete PyTorch checkpoint"
    return False, None


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic and verified: each checkpoint is written to a temporary file
    beside its target, verified (:func:`verify_checkpoint`) and only then moved onto the target. A write that
    fails (a full disk) leaves the previous file as it was and no partial file, and stops the run in one line.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.partial")
        temporary.unlink(missing_ok=True)
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            verify_checkpoint(temporary, shown=target)
            os.replace(temporary, target)  # atomic on one file system
        except OSError as error:
            raise CheckpointWriteError(
                f"checkpoint {target} could not be written ({error.strerror or error}); the previous {target.name}, "
                "if any, is left as it was: free some space or choose another folder") from error
        finally:
            temporary.unlink(missing_ok=True)
