from __future__ import annotations

from typing import Any

from pytorch_lightning import Trainer


def cpu_trainer(**kwargs: Any) -> Trainer:
    """A quiet single-process CPU trainer for tests."""
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)
