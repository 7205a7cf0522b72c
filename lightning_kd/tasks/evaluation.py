"""Validation, test and prediction steps of every task: the handed-on network, scored on the batch's samples or
valid positions, its outputs checked for NaN and infinity (:class:`~lightning_kd.tasks.finite.FiniteChecks`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.data.base import Batch
from lightning_kd.losses import flatten_positions


class EvaluationSteps:
    """Mixin of :class:`~lightning_kd.tasks.base.BaseTask`: its evaluation and prediction steps (see the module).

    A task whose evaluation differs (several peers, several exits) overrides :meth:`evaluation_step`.
    """

    val_metrics: Any
    test_metrics: Any
    count_nonfinite_outputs: Any
    log: Any
    log_dict: Any
    __call__: Any  # the LightningModule's: its forward

    def batch_logits(self, batch: Batch) -> Tensor:
        """The handed-on network's logits on a batch: on its ``input`` (a task whose networks read other keys of the
        batch, views or modalities, overrides this)."""
        return self(batch["input"])

    def evaluation_step(self, batch: Batch, stage: str) -> Tensor:
        """Log ``{stage}/loss`` and the ``{stage}/`` metrics of the handed-on network; return its logits."""
        logits = self.batch_logits(batch)
        self.log_evaluation(batch, logits, stage)
        return logits

    def log_evaluation(self, batch: Batch, logits: Tensor, stage: str) -> None:
        """Log ``{stage}/loss`` and the ``{stage}/`` metrics (accuracy, top-5, ECE; on tokens perplexity too) of the
        handed-on network, over the batch's samples or valid positions."""
        logits, targets = flatten_positions(logits, batch["target"])
        batch_size = len(targets)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, targets)
        self.log(f"{stage}/loss", F.cross_entropy(logits, targets), batch_size=batch_size, sync_dist=True)
        self.log_dict(metrics, batch_size=batch_size)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.count_nonfinite_outputs(self.evaluation_step(batch, "val"))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.count_nonfinite_outputs(self.evaluation_step(batch, "test"))

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """``{"index", "probabilities", "target"}``: the handed-on network's softmax, with each sample's index and
        label (``-1`` where the data has none)."""
        probabilities = self.batch_logits(batch).softmax(dim=1)
        target = batch.get("target")
        if target is None:
            target = torch.full_like(batch["index"], -1)
        return {"index": batch["index"], "probabilities": probabilities, "target": target}
