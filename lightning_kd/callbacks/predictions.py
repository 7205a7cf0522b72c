"""Predictions written to a file: ``lightning-kd predict`` leaves them on disk, merged across DDP ranks."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from lightning_kd.errors import Refusal, check_folder_path


class PredictionWriter(BasePredictionWriter):
    """Write the handed-on network's predictions to a CSV file at the end of ``predict``.

    One row per sample, sorted by ``index`` (the sample's position in the predicted split, the test
    split of the package's data modules)::

        index,prediction,prob_0,prob_1,...,prob_{C-1}
        0,7,0.0012,...

    ``prediction`` is the arg-max class, ``prob_c`` the softmax probability of class ``c``. Under DDP
    every rank predicts its share; the shares are gathered and rank zero writes the one file (a sample
    predicted twice, as a sampler that evens out the shares does, appears once).

    Args:
        path: The CSV file (default: ``<checkpoint name>-predictions.csv`` beside the checkpoint
            predicted from, so each checkpoint's predictions have their own file; without one,
            ``predictions.csv`` in the trainer's log folder, else its ``default_root_dir``).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = path
        self.written: Path | None = None

    def output_path(self, trainer: pl.Trainer) -> Path:
        """``path``; else beside the checkpoint predicted from (``<name>-predictions.csv``); else the log folder."""
        if self.path is not None:
            return Path(self.path)
        if trainer.ckpt_path:
            checkpoint = Path(trainer.ckpt_path)
            return checkpoint.with_name(f"{checkpoint.stem}-predictions.csv")
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.output_path(trainer)  # checked before predicting, not after
        check_folder_path(path.parent, "the predictions' folder")
        if path.is_dir():
            raise Refusal(f"the predictions file {path} is a folder: name a file (--trainer.callbacks.path)")

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any] | None) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not batches:
            return
        indices = torch.cat([b["index"] for b in batches]).to(pl_module.device)
        probabilities = torch.cat([b["probabilities"] for b in batches]).float().to(pl_module.device)
        if trainer.world_size > 1:  # every rank's share (shares may differ by a sample), on each rank
            indices, probabilities = _gather_uneven(trainer, indices, probabilities)
        path = self.output_path(trainer)
        if trainer.is_global_zero:
            _write_csv(path, indices.cpu(), probabilities.cpu())
            rank_zero_info(f"predictions of {len(set(indices.tolist()))} samples written to {path}")
        self.written = path
        trainer.strategy.barrier()


def _gather_uneven(trainer: pl.Trainer, indices: torch.Tensor, probabilities: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' rows, concatenated: padded to the longest share for the collective, then trimmed."""
    sizes = trainer.strategy.all_gather(torch.tensor(len(indices), device=indices.device)).flatten().tolist()
    longest = max(sizes)
    padding = longest - len(indices)
    indices = torch.cat([indices, indices.new_zeros(padding)])
    probabilities = torch.cat([probabilities, probabilities.new_zeros(padding, probabilities.shape[1])])
    all_indices = trainer.strategy.all_gather(indices)
    all_probabilities = trainer.strategy.all_gather(probabilities)
    return (torch.cat([all_indices[r, :n] for r, n in enumerate(sizes)]),
            torch.cat([all_probabilities[r, :n] for r, n in enumerate(sizes)]))


def _write_csv(path: Path, indices: torch.Tensor, probabilities: torch.Tensor) -> None:
    order = torch.argsort(indices, stable=True)
    indices, probabilities = indices[order], probabilities[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]  # a sample the sampler repeated appears once
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "prediction", *(f"prob_{c}" for c in range(probabilities.shape[1]))])
        for index, probs in zip(indices[keep].tolist(), probabilities[keep].tolist(), strict=True):
            writer.writerow([index, max(range(len(probs)), key=probs.__getitem__), *(f"{p:.6g}" for p in probs)])
