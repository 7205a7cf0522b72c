"""Metric collections, built on torchmetrics so they sync across DDP processes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection
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
    """Batch-size-weighted means of scalars over one epoch, kept on their device (no synchronisation per batch).

    A batch costs one tensor operation however many values it gives: they are stacked into one new vector
    (a copy, so a compiled step's reused output buffers are safe) and kept; the epoch's means are computed when
    asked, in a few operations. Values that come up in some batches only are averaged over theirs.

    Args:
        epoch: The epoch the sums belong to (``None``: none yet).

    Example:
        >>> sums = EpochSums(epoch=0)
        >>> sums.add({"ce": torch.tensor(1.0)}, batch_size=2, counts={"acc": torch.tensor(1.0)})
        >>> sums.add({"ce": torch.tensor(4.0)}, batch_size=1, counts={"acc": torch.tensor(1.0)})
        >>> sums.means()
        {'ce': tensor(2.), 'acc': tensor(0.6667)}
        >>> sums.add({"ce": torch.ones(1)}, batch_size=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the values logged per batch must be 0-dim tensors, got the shapes {'ce': (1,)}: reduce ...
    """

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch
        # the names a batch gave (and how many are counts) -> their stacked values and batch sizes, batch by batch
        self.batches: dict[tuple[tuple[str, ...], int], tuple[list[Tensor], list[int]]] = {}
        self.samples = 0

    def add(self, values: dict[str, Tensor], batch_size: int, counts: dict[str, Tensor] | None = None) -> None:
        """Add one batch's ``values`` (scalar means, weighted by its ``batch_size``) and ``counts`` (scalar sums
        over the batch, such as correct predictions; their means are per sample)."""
        counts = counts or {}
        key = ((*values, *counts), len(counts))
        # one kernel however many values (torch.stack of 0-dim scalars costs half what reshapes and a cat do)
        try:
            stacked = torch.stack([*values.values(), *counts.values()]).detach()
        except RuntimeError:  # scalars of other shapes: named below
            stacked = None
        if stacked is None or stacked.ndim != 1:
            shapes = {name: tuple(value.shape) for name, value in {**values, **counts}.items()}
            raise ValueError(f"the values logged per batch must be 0-dim tensors, got the shapes {shapes}: reduce "
                             "each loss to one number (its .mean() or .sum()) before a task returns it")
        kept = self.batches.get(key)
        if kept is None:
            kept = self.batches[key] = ([], [])
        kept[0].append(stacked)
        kept[1].append(batch_size)
        self.samples += batch_size

    def means(self, reduce: Callable[..., Tensor] | None = None) -> dict[str, Tensor]:
        """Each value's mean over the samples of the batches that gave it; ``reduce`` (a DDP strategy's
        ``reduce``) first sums the totals and samples over the processes, so the means are over every sample."""
        totals: dict[str, Tensor] = {}
        samples: dict[str, Tensor] = {}
        for (names, count_names), (stacked, sizes) in self.batches.items():
            values = torch.stack(stacked).double()  # (batches, names): an epoch's sum in float64
            size = values.new_tensor(sizes)
            weights = torch.ones_like(values)
            weights[:, :len(names) - count_names] = size.unsqueeze(1)  # means weighted by batch; counts as they are
            vector = torch.cat([(values * weights).sum(0), size.sum().unsqueeze(0)])
            if reduce is not None:  # one reduction per group: totals and the sample count together
                vector = reduce(vector, reduce_op="sum")
            for name, total in zip(names, vector[:-1].unbind(), strict=True):
                totals[name] = totals[name] + total if name in totals else total
                samples[name] = samples[name] + vector[-1] if name in samples else vector[-1]
        dtype = next((stacked[0].dtype for stacked, _ in self.batches.values()), torch.float32)
        return {name: (total / samples[name]).to(dtype if dtype.is_floating_point else torch.float32)
                for name, total in totals.items()}


def teacher_metric_names(stage: str, role: str) -> tuple[str, str]:
    """Logged names of a teacher's accuracy and of the student's top-1 agreement with it.

    Example:
        >>> teacher_metric_names("val", "teacher"), teacher_metric_names("test", "teacher_2")
        (('val/teacher/acc', 'val/agreement'), ('test/teacher_2/acc', 'test/agreement/teacher_2'))
    """
    agreement = f"{stage}/agreement" if role == "teacher" else f"{stage}/agreement/{role}"
    return f"{stage}/{role}/acc", agreement  # nested as the peers' (val/peer_1/acc) and the exits' are


def teachers_ensemble_metric_name(stage: str) -> str:
    """Logged name of the accuracy of the teachers' ensemble (their averaged softmax), with several teachers.

    Example:
        >>> teachers_ensemble_metric_name("val")
        'val/teachers_ensemble_acc'
    """
    return f"{stage}/teachers_ensemble_acc"


class TokenNLL(Metric):
    """Mean negative log-likelihood per token over a whole split: ``total NLL / total tokens``.

    Sums (not per-batch means) are kept and summed across DDP processes, so the value is exact however the
    split is batched or shared out. :class:`Perplexity` and :class:`BitsPerCharacter` are its exponential
    and its base-2 form (in a ``MetricCollection`` they share one update).

    Example:
        >>> metric = TokenNLL()
        >>> metric.update(torch.zeros(3, 4), torch.tensor([0, 1, 2]))  # uniform over 4 tokens
        >>> round(float(metric.compute()), 4), round(float(torch.log(torch.tensor(4.0))), 4)
        (1.3863, 1.3863)
    """

    full_state_update = False
    higher_is_better = False
    total: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, targets: Tensor) -> None:
        """Add ``(N, V)`` logits of ``N`` valid positions and their ``(N,)`` tokens."""
        self.total = self.total + F.cross_entropy(logits.double(), targets, reduction="sum")
        self.count = self.count + targets.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class Perplexity(TokenNLL):
    """``exp(total NLL / total tokens)`` over the whole split (not a mean of per-batch perplexities)."""

    def compute(self) -> Tensor:
        return torch.exp(super().compute())


class BitsPerCharacter(TokenNLL):
    """``total NLL / total characters / ln 2``: a character-level model's bits per character."""

    def compute(self) -> Tensor:
        return super().compute() / math.log(2)


def evaluation_metrics(num_classes: int, prefix: str, unit: str | None = None) -> MetricCollection:
    """``{prefix}acc``, ``{prefix}acc_top5`` (when there are more than 5 classes) and ``{prefix}ece``; for tokens
    (``unit`` ``"word"`` or ``"char"``) also ``{prefix}nll`` and ``{prefix}ppl``, and ``{prefix}bpc`` for characters.

    ECE uses 15 equal-width confidence bins (Guo et al. 2017). On tokens accuracy and ECE are per token.

    Example:
        >>> sorted(evaluation_metrics(10, "val/").keys(keep_base=False))
        ['val/acc', 'val/acc_top5', 'val/ece']
        >>> sorted(evaluation_metrics(10, "val/", unit="char").keys(keep_base=False))
        ['val/acc', 'val/acc_top5', 'val/bpc', 'val/ece', 'val/nll', 'val/ppl']
    """
    metrics: dict[str, Metric] = {"acc": accuracy(num_classes)}
    if num_classes > 5:
        metrics["acc_top5"] = accuracy(num_classes, top_k=5)
    metrics["ece"] = MulticlassCalibrationError(num_classes=num_classes, n_bins=15, norm="l1")
    if unit is not None:
        metrics |= {"nll": TokenNLL(), "ppl": Perplexity()}
        if unit == "char":
            metrics["bpc"] = BitsPerCharacter()
    return MetricCollection(metrics, prefix=prefix)


def ensemble_perplexity(members: Sequence[TokenPredictions]) -> float:
    """Perplexity of the ensemble that averages its members' probabilities per token (Born-Again's ensembles).

    Example:
        >>> one = lambda p: TokenPredictions(torch.tensor([p]), torch.tensor([0]), torch.tensor([p]))
        >>> half, quarter = one(0.5), one(0.25)
        >>> round(ensemble_perplexity([half, quarter]), 6)  # 1 / ((0.5 + 0.25) / 2)
        2.666667
    """
    if not members:
        raise Refusal("an ensemble needs at least one member")
    return float(torch.exp(-torch.stack([m.target.double() for m in members]).mean(dim=0).log().mean()))


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


@dataclass(frozen=True)
class TokenPredictions:
    """What scoring keeps of a language model's softmax over a split: per token, the true token's probability,
    the most probable token and its probability (the full ``(N, V)`` softmax would take gigabytes).

    Example:
        >>> kept = TokenPredictions.of(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), torch.tensor([0, 1]))
        >>> kept.target.tolist(), kept.top.tolist()
        ([0.699999988079071, 0.30000001192092896], [0, 2])
    """

    target: Tensor
    top: Tensor
    confidence: Tensor

    @classmethod
    def of(cls, probabilities: Tensor, targets: Tensor) -> TokenPredictions:
        """Keep what is needed of ``(N, V)`` probabilities of tokens ``targets`` ``(N,)``."""
        confidence, top = probabilities.max(dim=1)
        return cls(probabilities.gather(1, targets.unsqueeze(1)).squeeze(1), top, confidence)

    @classmethod
    def cat(cls, parts: Sequence[TokenPredictions]) -> TokenPredictions:
        return cls(*(torch.cat([getattr(part, name) for part in parts]) for name in ("target", "top", "confidence")))

    def isfinite(self) -> bool:
        return bool(torch.isfinite(self.target).all() and torch.isfinite(self.confidence).all())

    def as_dict(self) -> dict[str, Tensor]:
        """Plain tensors, for a checkpoint that loads with ``weights_only``."""
        return {"token_target": self.target, "token_top": self.top, "token_confidence": self.confidence}

    @staticmethod
    def is_dict(value: Any) -> bool:
        return isinstance(value, dict) and set(value) == {"token_target", "token_top", "token_confidence"}

    @classmethod
    def from_dict(cls, value: dict[str, Tensor]) -> TokenPredictions:
        return cls(value["token_target"], value["token_top"], value["token_confidence"])

    def cpu(self) -> TokenPredictions:
        return TokenPredictions(self.target.cpu(), self.top.cpu(), self.confidence.cpu())


def calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """Expected calibration error (l1, equal-width bins, as torchmetrics bins them) from top-1 confidences.

    Example:
        >>> round(calibration_error(torch.tensor([0.9, 0.9]), torch.tensor([True, False])), 6)
        0.4
    """
    boundaries = torch.linspace(0, 1, bins + 1, dtype=confidence.dtype)
    index = (torch.bucketize(confidence, boundaries, right=True) - 1).clamp(0, bins - 1)
    # sum over bins of |mean correct - mean confidence| * bin share = |sum correct - sum confidence| / N per bin
    accuracy_sum = torch.zeros(bins).index_add_(0, index, correct.float())
    confidence_sum = torch.zeros(bins).index_add_(0, index, confidence.float())
    return float((accuracy_sum - confidence_sum).abs().sum() / len(confidence))


def prediction_metrics(probabilities: Tensor | TokenPredictions, targets: Tensor,
                       reference: Tensor | TokenPredictions | None = None) -> dict[str, float]:
    """``acc``, ``ece`` (15 bins) and, given a reference model's probabilities, top-1 ``agreement`` with it;
    for :class:`TokenPredictions` per token, and ``ppl`` too."""
    if isinstance(probabilities, TokenPredictions):
        correct = probabilities.top == targets
        nll = -probabilities.target.double().log().mean()
        metrics = {"acc": float(correct.float().mean()), "ppl": float(torch.exp(nll)),
                   "ece": calibration_error(probabilities.confidence, correct)}
        if isinstance(reference, TokenPredictions):
            metrics["agreement"] = float((probabilities.top == reference.top).float().mean())
        return metrics
    num_classes = probabilities.shape[1]
    metrics = {
        "acc": float(multiclass_accuracy(probabilities, targets, num_classes, average="micro")),
        "ece": float(multiclass_calibration_error(probabilities, targets, num_classes, n_bins=15, norm="l1")),
    }
    if reference is not None:  # as the tasks' agreement metric: accuracy against the reference's argmax
        agreement = multiclass_accuracy(probabilities, reference.argmax(dim=1), num_classes, average="micro")
        metrics["agreement"] = float(agreement)
    return metrics
