"""Anytime inference with a multi-exit network: stop at the first exit that is confident enough.

A sample stops at the first exit whose top softmax probability reaches ``threshold``; the last exit
(the backbone's head) answers whatever remains. ``threshold <= 0`` stops every sample at exit 1;
``threshold > 1`` runs every sample to the end.

* :func:`exit_confidences`, :func:`first_confident_exit` and :func:`early_exit_sweep` score thresholds
  on outputs already computed for every exit (one pass over a test set scores any number of thresholds), charging each
  sample the cost of the exits it ran (:meth:`~lightning_kd.models.MultiExitNetwork.exit_costs`).
* :class:`EarlyExitNetwork` is the deployable predictor: a plain ``nn.Module`` that really stops the
  backbone once every sample of its batch has exited.

"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.multi_exit import MultiExitNetwork

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
"""Confidence thresholds of the sweep a :class:`~lightning_kd.tasks.SelfDistillation` test reports."""


def exit_confidences(exit_logits: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``(confidences, predictions)``, both ``(N, K)``: each exit's top softmax probability and its class.

    Example:
        >>> import torch
        >>> confidences, predictions = exit_confidences([torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])])
        >>> [round(c, 3) for c in confidences[0].tolist()], predictions.tolist()
        ([0.881, 0.5], [[0, 0]])
    """
    if not exit_logits:
        raise Refusal("early exit needs at least one exit")
    top = [z.softmax(dim=1).max(dim=1) for z in exit_logits]
    return torch.stack([t.values for t in top], dim=1), torch.stack([t.indices for t in top], dim=1)


def first_confident_exit(confidences: Tensor, threshold: float) -> Tensor:
    """Index (0-based) of each sample's first exit whose confidence is ``>= threshold``; else the last exit.

    Args:
        confidences: ``(N, K)`` each exit's top softmax probability, shallowest first.
        threshold: The confidence to stop at.

    Example:
        >>> import torch
        >>> first_confident_exit(torch.tensor([[0.9, 0.8], [0.6, 0.7]]), 0.8).tolist()
        [0, 1]
    """
    confident = confidences >= threshold
    confident[:, -1] = True  # the last exit answers what no earlier one did
    return confident.int().argmax(dim=1)  # the first True


@dataclass(frozen=True)
class EarlyExitResult:
    """One threshold of a sweep.

    Attributes:
        threshold: The confidence threshold.
        accuracy: Top-1 accuracy of the answers given.
        mean_macs: Multiply-adds per sample, averaged over the samples (each charged the exit it stopped at).
        exit_fractions: Fraction of the samples that stopped at each exit, shallowest first.
    """

    threshold: float
    accuracy: float
    mean_macs: float
    exit_fractions: tuple[float, ...]


def early_exit_sweep(confidences: Tensor, predictions: Tensor, targets: Tensor, exit_macs: Sequence[float],
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[EarlyExitResult]:
    """Accuracy and mean compute of early exit at each threshold, from every exit's outputs on the same samples.

    Args:
        confidences: ``(N, K)`` each exit's top softmax probability, shallowest first (:func:`exit_confidences`).
        predictions: ``(N, K)`` each exit's predicted class.
        targets: ``(N,)`` class indices.
        exit_macs: Multiply-adds of running up to and including each exit (cumulative, as
            :meth:`~lightning_kd.models.MultiExitNetwork.exit_costs` gives them).
        thresholds: The thresholds to score.

    Example:
        >>> import torch
        >>> confidences, predictions = torch.tensor([[0.9, 0.8], [0.6, 0.7]]), torch.tensor([[0, 1], [0, 1]])
        >>> early_exit_sweep(confidences, predictions, torch.tensor([0, 1]), [10, 30], [0.8])
        [EarlyExitResult(threshold=0.8, accuracy=1.0, mean_macs=20.0, exit_fractions=(0.5, 0.5))]
    """
    if confidences.shape != predictions.shape or confidences.ndim != 2 or len(targets) != len(confidences):
        raise Refusal(f"confidences {tuple(confidences.shape)} and predictions {tuple(predictions.shape)} must both "
                         f"be (N, exits), with N = {len(targets)} targets")
    if len(exit_macs) != confidences.shape[1]:
        raise Refusal(f"{confidences.shape[1]} exits but {len(exit_macs)} costs")
    macs = torch.tensor([float(m) for m in exit_macs], dtype=torch.float64, device=confidences.device)
    results = []
    for threshold in thresholds:
        chosen = first_confident_exit(confidences, threshold)
        answers = predictions.gather(1, chosen.unsqueeze(1)).squeeze(1)
        counts = torch.bincount(chosen, minlength=confidences.shape[1])
        results.append(EarlyExitResult(
            float(threshold), float((answers == targets).double().mean()), float(macs[chosen].mean()),
            tuple(float(c) / len(chosen) for c in counts)))
    return results


class _AllExited(Exception):
    """Raised from an exit's hook once every sample of the batch has its answer: stops the backbone there."""


class EarlyExitNetwork(nn.Module):
    """A multi-exit network that answers each sample at its first confident exit (a copy; plain ``nn.Module``).

    ``forward(x)`` returns ``(B, C)`` logits, each sample's from the exit it stopped at. The backbone runs
    until every sample of the batch has stopped (with a batch of one: exactly up to that sample's exit).
    Use it in eval mode.

    Args:
        network: The multi-exit network (copied).
        threshold: Stop at the first exit whose top softmax probability is ``>= threshold``.

    Example:
        >>> import torch
        >>> from lightning_kd.models import SmallCNN
        >>> net = MultiExitNetwork(SmallCNN(widths=(8, 16, 32)), input_shape=(1, 28, 28)).eval()
        >>> logits, exits = EarlyExitNetwork(net, threshold=0.0).predict(torch.randn(3, 1, 28, 28))
        >>> exits.tolist()  # every sample stops at exit 1
        [1, 1, 1]
    """

    def __init__(self, network: MultiExitNetwork, threshold: float) -> None:
        super().__init__()
        self.network = copy.deepcopy(network)
        self.threshold = float(threshold)

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(x)[0]

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, exit)``: each sample's logits and the number (1-based) of the exit that answered."""
        net = self.network
        answers: Tensor | None = None
        exit_taken = torch.full((len(x),), net.num_exits, dtype=torch.long, device=x.device)
        modules = dict(net.backbone.named_modules())

        def exit_hook(number: int, head: nn.Module) -> Any:
            def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
                nonlocal answers
                logits = head(output)
                if answers is None:
                    answers = torch.zeros_like(logits)
                undecided = exit_taken == net.num_exits
                stop = undecided & (logits.softmax(dim=1).max(dim=1).values >= self.threshold)
                answers[stop] = logits[stop]
                exit_taken[stop] = number
                if bool((exit_taken < net.num_exits).all()):
                    raise _AllExited

            return hook

        with ExitStack() as hooks:
            for number, (path, head) in enumerate(zip(net.exit_paths, net.exits, strict=True), start=1):
                hooks.callback(modules[path].register_forward_hook(exit_hook(number, head)).remove)
            try:
                final = net.backbone(x)
            except _AllExited:
                assert answers is not None
                return answers, exit_taken
        last = exit_taken == net.num_exits
        answers = final.clone() if answers is None else answers
        answers[last] = final[last]
        return answers, exit_taken
