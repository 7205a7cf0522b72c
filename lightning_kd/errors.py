"""The one exception type for a user's mistake (a leaf module: every layer may raise it).

A :class:`Refusal` says what is wrong and how to fix it, in one line; the ``lightning-kd`` command
prints it as ``lightning-kd: error: <message>`` and exits with status 2. Any other exception is a bug
(of this package or of a library) and keeps its traceback.

Example:
    >>> raise Refusal("temperature must be finite and > 0, got inf")
    Traceback (most recent call last):
    ...
    lightning_kd.errors.Refusal: temperature must be finite and > 0, got inf
    >>> issubclass(Refusal, ValueError)  # code that catches ValueError keeps working
    True
"""

from __future__ import annotations


class Refusal(ValueError):
    """A user's input that the package refuses: a bad value, a missing file, a network that does not fit the data."""


class MissingFileRefusal(Refusal, FileNotFoundError):
    """A file or folder the user named (data, a checkpoint) does not exist; the message says how to get it."""


class NonFiniteLossError(Refusal, FloatingPointError):
    """A training loss became NaN or infinite: the run stops there, before any checkpoint of such weights."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The trained weights (or buffers) became NaN or infinite, whether or not the loss did."""


class NonFiniteOutputsError(NonFiniteLossError):
    """An evaluation met NaN or infinite outputs: a diverged network, not a result to report."""


def check_folder_path(folder: object, what: str) -> None:
    """Refuse, before anything is written, a ``folder`` that cannot be one: it, or a folder on its way, is a file.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "notes.txt").write_text("x")
        1
        >>> check_folder_path(root / "notes.txt" / "checkpoints", "the checkpoint folder")
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: the checkpoint folder .../notes.txt/checkpoints cannot be made: .../notes.txt \
is a file, not a folder
    """
    from pathlib import Path

    path = Path(str(folder))
    for step in (path, *path.parents):
        if step.exists():
            if not step.is_dir():
                raise Refusal(f"{what} {path} cannot be made: {step} is a file, not a folder")
            return


def is_count(value: object) -> bool:
    """Whether ``value`` is an integer >= 1 (a bool is not one).

    Example:
        >>> is_count(3), is_count(0), is_count(True), is_count(2.0)
        (True, False, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_training_schedule(trainer: object) -> None:
    """Refuse, before training, the ``Trainer`` settings that Lightning accepts and then fails on mid-run with a
    division by zero (at the first step, or at the first epoch's end): ``accumulate_grad_batches`` below 1,
    ``check_val_every_n_epoch`` below 1, ``val_check_interval`` a number of batches below 1.

    Example:
        >>> from types import SimpleNamespace
        >>> check_training_schedule(SimpleNamespace(accumulate_grad_batches=1, check_val_every_n_epoch=None,
        ...                                         val_check_interval=0.5))
        >>> check_training_schedule(SimpleNamespace(accumulate_grad_batches=0, check_val_every_n_epoch=1,
        ...                                         val_check_interval=1.0))
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: trainer.accumulate_grad_batches must be an integer >= 1 (the batches whose \
gradients one optimizer step sums), got 0
    """
    accumulate = getattr(trainer, "accumulate_grad_batches", 1)
    if not is_count(accumulate):
        raise Refusal("trainer.accumulate_grad_batches must be an integer >= 1 (the batches whose gradients one "
                      f"optimizer step sums), got {accumulate!r}")
    every = getattr(trainer, "check_val_every_n_epoch", 1)
    if every is not None and not is_count(every):
        raise Refusal("trainer.check_val_every_n_epoch must be an integer >= 1, or null to validate every "
                      f"val_check_interval batches across epochs, got {every!r}")
    interval = getattr(trainer, "val_check_interval", 1.0)
    if isinstance(interval, int) and not isinstance(interval, bool) and interval < 1:
        raise Refusal("trainer.val_check_interval must be a fraction of the epoch in (0, 1] or a number of "
                      f"training batches >= 1, got {interval!r}")
