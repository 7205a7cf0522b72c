"""What the command line prints besides the package's own tables: known-harmless messages silenced, one by one.

Each filter names one message that a user of this package can do nothing about; nothing else is
hidden. Installed by the ``lightning-kd`` entry point (a Python user keeps Lightning's defaults).
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

_HARMLESS_WARNINGS = (
    # Lightning 2.6 on torch >= 2.10 uses torch's deprecated pytree API internally
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # the text data's batches are an IterableDataset of known length, read in the main process (no workers to
    # split it): Lightning warns of every such dataset
    r"Your `IterableDataset` has `__len__` defined",
)
_HARMLESS_LOG_RECORDS = (
    # Lightning advertises its hosted logger on every run
    "install [litlogger]",
    "try installing [litlogger]",
)


_EVALUATION_WARNINGS = (
    # test/validate/predict take only the weights from a fit's checkpoint: the fit's callback states (its run record,
    # its checkpoint folder) are not restored, and are not meant to be
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided",
    r"The dirpath has changed from .* therefore `best_model_score`",
)


def quiet_evaluation_noise() -> None:
    """Silence Lightning's warnings about a fit's callback states when ``test``/``validate``/``predict`` read its
    checkpoint (the CLI calls it for those subcommands only: a resumed fit keeps them)."""
    for pattern in _EVALUATION_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _HARMLESS_LOG_RECORDS)


def quiet_known_noise() -> None:
    """Silence the messages listed in this module (idempotent)."""
    for pattern in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropHarmless) for f in logger.filters):
        logger.addFilter(_DropHarmless())


def silence_eval_mode_warning(modules: list[Any], frozen: list[Any]) -> Any:
    """Silence Lightning's "Found N module(s) in eval mode" when the modules in eval are exactly ``frozen`` ones.

    A task calls this at the start of a fit (its frozen teachers are in eval mode by design) and removes
    the filter with :func:`restore_warning` once training started. Returns the filter, or ``None`` when
    another module is in eval mode (then the warning is the user's to see).
    """
    frozen_ids = {id(module) for module in frozen}
    in_eval = [module for module in modules if not module.training]
    if not in_eval or not all(id(module) in frozen_ids for module in in_eval):
        return None
    warnings.filterwarnings("ignore", message=re.escape(f"Found {len(in_eval)} module(s) in eval mode"))
    return warnings.filters[0]


def restore_warning(installed: Any) -> None:
    """Remove a filter :func:`silence_eval_mode_warning` installed (no-op for ``None`` or one already gone)."""
    if installed is not None and installed in warnings.filters:
        warnings.filters.remove(installed)
