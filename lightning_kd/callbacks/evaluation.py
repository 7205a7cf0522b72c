"""Scoring a network on the data module's evaluation splits, outside Lightning's loops."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_kd.losses import flatten_positions
from lightning_kd.metrics import TokenPredictions
from lightning_kd.models.language import begin_stream

SPLITS = ("val", "test")


def evaluation_loaders(trainer: pl.Trainer) -> dict[str, DataLoader]:
    """Fresh (unsharded) val and test loaders from the trainer's data module; a split it lacks is left out.

    A data module that shards its own loaders (token streams) gives its whole split by
    ``evaluation_dataloader(split)``.
    """
    datamodule = trainer.datamodule
    if datamodule is None:
        rank_zero_warn("no data module, so no per-split scores")
        return {}
    loaders = {}
    for split in SPLITS:
        try:
            whole = getattr(datamodule, "evaluation_dataloader", None)
            loaders[split] = whole(split) if whole is not None else getattr(datamodule, f"{split}_dataloader")()
        except Exception as error:  # a data module without that split; say so and go on
            rank_zero_warn(f"no {split} loader from {type(datamodule).__name__} ({error}); that split is skipped")
    return loaders


@torch.no_grad()
def predict_splits(
    trainer: pl.Trainer, network: nn.Module, loaders: dict[str, DataLoader]
) -> tuple[dict[str, Tensor | TokenPredictions], dict[str, Tensor]]:
    """Softmax outputs and targets of each split, on the CPU, in the loader's (fixed) order.

    For token data (``(B, T, V)`` logits) the valid positions are flattened, and what is kept of each
    token's softmax is :class:`~lightning_kd.metrics.TokenPredictions`; a recurrent network reads each
    split as a fresh stream of its own.

    Inputs go through the trainer's precision plugin as in Lightning's own loops. Every process runs
    the whole split (up to the trainer's ``limit_{val,test}_batches``): no collective is needed and
    all processes hold the same result. The training RNG stream is left untouched.

    Returns:
        ``(probabilities, targets)``, each by split.

    Raises:
        FloatingPointError: The network's outputs on a split are not finite.
    """
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    probabilities: dict[str, Tensor] = {}
    targets: dict[str, Tensor] = {}
    with isolate_rng():  # iterating a loader draws a seed
        for split, loader in loaders.items():
            limit = batch_limit(getattr(trainer, f"limit_{split}_batches"), len(loader))
            if limit == 0:
                continue
            probs, labels = [], []
            begin_stream(network, f"score/{split}")
            for _, batch in zip(range(limit), loader, strict=False):
                inputs = batch["input"].to(device)
                inputs = trainer.precision_plugin.convert_input(inputs) if inputs.is_floating_point() else inputs
                with trainer.precision_plugin.forward_context():
                    logits = network(inputs)
                logits, target = flatten_positions(logits.float(), batch["target"].to(logits.device))
                kept = logits.softmax(dim=1)
                probs.append(kept.cpu() if batch["target"].ndim == 1 else TokenPredictions.of(kept, target).cpu())
                labels.append(target.cpu())
            probabilities[split] = TokenPredictions.cat(probs) if batch["target"].ndim > 1 else torch.cat(probs)
            targets[split] = torch.cat(labels)
            finite = probabilities[split]
            if not (finite.isfinite() if isinstance(finite, TokenPredictions) else torch.isfinite(finite).all()):
                raise FloatingPointError(
                    f"{type(network).__name__} gives NaN or infinite outputs on the {split} split; it is not scored"
                )
    network.train(was_training)
    begin_stream(network, "train", fresh=False)
    return probabilities, targets


def batch_limit(limit: int | float, num_batches: int) -> int:
    """The batches a trainer's ``limit_{val,test}_batches`` allows (an int counts batches, a float is a fraction).

    Example:
        >>> batch_limit(0.5, 10), batch_limit(3, 10), batch_limit(1.0, 10)
        (5, 3, 10)
    """
    if isinstance(limit, float):
        return int(num_batches * limit) if limit < 1 else num_batches
    return min(int(limit), num_batches)
