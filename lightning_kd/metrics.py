"""Metric collections, built on torchmetrics so they sync across DDP processes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

from lightning_kd.errors import Refusal

EVALUATION_STAGES = ("val", "test")
"""The stages whose metrics tasks log per network (validation and test); not the networks' stages of
:mod:`lightning_kd.models.taps`."""


def accuracy(num_classes: int, top_k: int = 1) -> MulticlassAccuracy:
    """Top-k accuracy over all samples (micro average, the number papers report)."""
    return MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")


def training_metric_name(part: str) -> str:
    """Logged name of a loss part: ``train/loss`` for the total, ``train/<part>_loss`` for the others.

    Example:
        >>> training_metric_name("loss"), training_metric_name("kd")
        ('train/loss', 'train/kd_loss')
    """
    return "train/loss" if part == "loss" else f"train/{part}_loss"


class EpochSums:
    """Batch-size-weighted means of scalars over one epoch, summed on their device (no synchronisation per batch).

    Args:
        epoch: The epoch the sums belong to (``None``: none yet).

    Example:
        >>> sums = EpochSums(epoch=0)
        >>> sums.add({"train/ce_loss": torch.tensor(1.0)}, batch_size=2)
        >>> sums.add({"train/ce_loss": torch.tensor(4.0)}, batch_size=1)
        >>> sums.means()
        {'train/ce_loss': tensor(2.)}
    """

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch
        self.totals: dict[str, Tensor] = {}
        self.samples = 0

    def add(self, values: dict[str, Tensor], batch_size: int) -> None:
        """Add one batch's ``values`` (scalars), weighted by its ``batch_size``."""
        for key, value in values.items():
            weighted = value.float() * batch_size
            self.totals[key] = self.totals[key] + weighted if key in self.totals else weighted
        self.samples += batch_size

    def means(self) -> dict[str, Tensor]:
        """Each value's mean over the samples added."""
        return {key: total / self.samples for key, total in self.totals.items()}


def teacher_metric_names(stage: str, role: str) -> tuple[str, str]:
    """Logged names of a teacher's accuracy and of the student's top-1 agreement with it.

    Example:
        >>> teacher_metric_names("val", "teacher"), teacher_metric_names("test", "teacher_2")
        (('val/teacher_acc', 'val/agreement'), ('test/teacher_2_acc', 'test/agreement_teacher_2'))
    """
    agreement = f"{stage}/agreement" if role == "teacher" else f"{stage}/agreement_{role}"
    return f"{stage}/{role}_acc", agreement


def teachers_ensemble_metric_name(stage: str) -> str:
    """Logged name of the accuracy of the teachers' ensemble (their averaged softmax), with several teachers.

    Example:
        >>> teachers_ensemble_metric_name("val")
        'val/teachers_ensemble_acc'
    """
    return f"{stage}/teachers_ensemble_acc"


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


def ensemble_probabilities(member_probabilities: Sequence[Tensor]) -> Tensor:
    """Born-again ensemble: ``f^k(x) = (1/k) sum_i softmax(f(x; theta_i))``, from the members' probabilities.

    Example:
        >>> import torch
        >>> ensemble_probabilities([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
        tensor([[0.5000, 0.5000]])
    """
    if not member_probabilities:
        raise Refusal("an ensemble needs at least one member")
    return torch.stack(list(member_probabilities)).mean(dim=0)


def prediction_metrics(probabilities: Tensor, targets: Tensor, reference: Tensor | None = None) -> dict[str, float]:
    """``acc``, ``ece`` (15 bins) and, given a reference model's probabilities, top-1 ``agreement`` with it."""
    num_classes = probabilities.shape[1]
    metrics = {
        "acc": float(multiclass_accuracy(probabilities, targets, num_classes, average="micro")),
        "ece": float(multiclass_calibration_error(probabilities, targets, num_classes, n_bins=15, norm="l1")),
    }
    if reference is not None:  # as the tasks' agreement metric: accuracy against the reference's argmax
        agreement = multiclass_accuracy(probabilities, reference.argmax(dim=1), num_classes, average="micro")
        metrics["agreement"] = float(agreement)
    return metrics
