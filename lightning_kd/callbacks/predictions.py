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

    One row per sample, sorted by ``index`` (the sample's position in the predicted split: the test split of the
    package's data modules, or an image folder's ``predict_root``)::

        index,target,prediction,prob_0,prob_1,...,prob_{C-1}
        0,7,7,0.0012,...

    ``target`` is the sample's label (the column is left out when the data has none: unlabelled images),
    ``prediction`` the arg-max class, ``prob_c`` the softmax probability of class ``c``. Where the data module
    names its classes (``class_names``: an image folder's folder names) the labels and predictions are written as
    names and the columns as ``prob_<name>``; where it names its samples (``sample_names()``: an image's path) a
    ``sample`` column follows ``index``. Under DDP
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
        targets = torch.cat([b.get("target", torch.full_like(b["index"], -1)) for b in batches]).to(pl_module.device)
        if trainer.world_size > 1:  # every rank's share (shares may differ by a sample), on each rank
            indices, probabilities, targets = _gather_uneven(trainer, indices, probabilities, targets)
        path = self.output_path(trainer)
        if trainer.is_global_zero:
            datamodule = getattr(trainer, "datamodule", None)
            names = datamodule.sample_names() if hasattr(datamodule, "sample_names") else None
            _write_csv(path, indices.cpu(), probabilities.cpu(), targets.cpu(), names,
                       getattr(datamodule, "class_names", None))
            rank_zero_info(f"predictions of {len(set(indices.tolist()))} samples written to {path}")
        self.written = path
        trainer.strategy.barrier()


def _gather_uneven(trainer: pl.Trainer, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All ranks' rows of each column, concatenated: padded to the longest share for the collective, then trimmed."""
    sizes = trainer.strategy.all_gather(torch.tensor(len(columns[0]), device=columns[0].device)).flatten().tolist()
    padding = max(sizes) - len(columns[0])
    gathered = []
    for column in columns:
        padded = torch.cat([column, column.new_zeros(padding, *column.shape[1:])])
        every = trainer.strategy.all_gather(padded)
        gathered.append(torch.cat([every[rank, :size] for rank, size in enumerate(sizes)]))
    return tuple(gathered)


def _write_csv(path: Path, indices: torch.Tensor, probabilities: torch.Tensor, targets: torch.Tensor,
               sample_names: list[str] | None = None, class_names: list[str] | None = None) -> None:
    order = torch.argsort(indices, stable=True)
    indices, probabilities, targets = indices[order], probabilities[order], targets[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]  # a sample the sampler repeated appears once
    indices, probabilities, targets = indices[keep].tolist(), probabilities[keep].tolist(), targets[keep].tolist()
    classes = class_names if class_names and len(class_names) == len(probabilities[0]) else None

    def label(c: int) -> Any:
        return classes[c] if classes else c

    labelled = any(target >= 0 for target in targets)
    header = ["index", *(["sample"] if sample_names else []), *(["target"] if labelled else []), "prediction",
              *(f"prob_{classes[c] if classes else c}" for c in range(len(probabilities[0])))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for index, target, probs in zip(indices, targets, probabilities, strict=True):
            row: list[Any] = [index]
            if sample_names:
                row.append(sample_names[index])
            if labelled:
                row.append(label(target) if target >= 0 else "")
            row.append(label(max(range(len(probs)), key=probs.__getitem__)))
            writer.writerow([*row, *(f"{p:.6g}" for p in probs)])
