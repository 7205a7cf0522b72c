"""Metric collections, built on torchmetrics so they sync across DDP processes."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError


def accuracy(num_classes: int, top_k: int = 1) -> MulticlassAccuracy:
    """Top-k accuracy over all samples (micro average, the number papers report)."""
    return MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")


def evaluation_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """``{prefix}acc``, ``{prefix}acc_top5`` (when there are more than 5 classes) and ``{prefix}ece``.

    ECE uses 15 equal-width confidence bins (Guo et al. 2017).

    Example:
        >>> sorted(evaluation_metrics(10, "val/").keys(keep_base=False))
        ['val/acc', 'val/acc_top5', 'val/ece']
    """
    metrics = {"acc": accuracy(num_classes)}
    if num_classes > 5:
        metrics["acc_top5"] = accuracy(num_classes, top_k=5)
    metrics["ece"] = MulticlassCalibrationError(num_classes=num_classes, n_bins=15, norm="l1")
    return MetricCollection(metrics, prefix=prefix)
