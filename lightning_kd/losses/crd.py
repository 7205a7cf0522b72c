"""Contrastive representation distillation, CRD (Tian, Krishnan & Isola 2020).

The student's and the teacher's penultimate features are embedded (a linear map each, to ``dim`` 128, then
L2-normalised: :math:`v^s, v^t`) and each is contrasted with the *other* network's memory bank: one row per training
sample, a momentum average of that sample's past embeddings. For a batch sample :math:`i` with its own row (the
positive) and ``K`` rows of samples of other classes (the negatives), as the authors' code (RepDistiller, which
mdistiller copies) computes it:

* scores :math:`h_j = \\exp(\\langle v, m_j \\rangle / \\tau) / Z`, ``Z = mean(exp scores of the first batch) * N``
  fixed from then on (``N`` the training samples);
* the NCE loss with noise :math:`P_n = 1/N`: :math:`-\\log \\frac{h_0}{h_0 + K P_n + \\epsilon}
  - \\sum_{j \\ge 1} \\log \\frac{K P_n}{h_j + K P_n + \\epsilon}`, summed over the batch and divided by its size,
  for the student against the teacher's bank plus the teacher against the student's;
* then each bank's rows of the batch move to ``normalise(momentum * row + (1 - momentum) * v)``.

Defaults are the benchmark codebases' CIFAR-100 settings: ``dim`` 128, ``K`` 16384, :math:`\\tau` 0.07, momentum
0.5, weight 0.8 beside the cross-entropy (weight 1); ``kd_weight`` adds Hinton's term (RepDistiller's "CRD+KD").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import soft_target_kl
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.precision import full_precision
from lightning_kd.losses.validation import LossOutput, check_positive, check_temperature, check_weight

__all__ = ["CRD_DEFAULTS", "CRD_EPS", "ContrastMemory", "check_crd_settings", "check_momentum", "crd_embedding",
           "crd_loss", "nce_loss", "negatives_of_other_classes"]

CRD_DEFAULTS = {"crd_weight": 0.8, "dim": 128, "negatives": 16384, "nce_temperature": 0.07, "momentum": 0.5}
"""The benchmark codebases' CIFAR-100 settings."""

CRD_EPS = 1e-7
"""The authors' ``eps`` in the NCE ratios."""


@full_precision
def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """The NCE loss of ``(B, 1 + K)`` normalised scores, the positive first, noise ``1 / num_data``.

    Example:
        >>> scores = torch.tensor([[0.5, 1e-4, 1e-4]])
        >>> round(float(nce_loss(scores, 1000)), 4)
        0.1017
    """
    batch, negatives = scores.shape[0], scores.shape[1] - 1
    noise = negatives / num_data
    positive = (scores[:, 0] / (scores[:, 0] + noise + CRD_EPS)).log()
    negative = (noise / (scores[:, 1:] + noise + CRD_EPS)).log()
    return -(positive.sum() + negative.sum()) / batch


def negatives_of_other_classes(labels: Tensor, targets: Tensor, count: int, generator: torch.Generator | None = None
                               ) -> Tensor:
    """``(B, count)`` indices of training samples drawn uniformly, with replacement, among those whose label differs
    from each target (the authors' "exact" sampling).

    Args:
        labels: ``(N,)`` the label of every training sample, by index.
        targets: ``(B,)`` the batch's labels.
        count: Negatives per sample ``K``.
        generator: The random source (default: torch's global one, on ``labels``' device).

    Raises:
        Refusal: Some target's class holds every training sample (no negative exists).

    Example:
        >>> labels = torch.tensor([0, 0, 1, 2, 2])
        >>> drawn = negatives_of_other_classes(labels, torch.tensor([0, 2]), 50)
        >>> set(labels[drawn[0]].tolist()) <= {1, 2}, set(labels[drawn[1]].tolist()) <= {0, 1}
        (True, True)
    """
    order = torch.argsort(labels, stable=True)  # the samples grouped by class
    counts = torch.bincount(labels, minlength=int(targets.max()) + 1)
    starts = torch.cumsum(counts, 0) - counts
    own = counts[targets]
    others = len(labels) - own
    if bool((others == 0).any()):
        raise Refusal("CRD needs samples of other classes to contrast with: the training split holds one class")
    uniform = torch.rand(len(targets), count, generator=generator, device=labels.device)
    drawn = (uniform * others.unsqueeze(1)).long().clamp(max=others.unsqueeze(1) - 1)
    # an index past the target's own class skips over it
    position = drawn + (drawn >= starts[targets].unsqueeze(1)) * own.unsqueeze(1)
    return order[position]


class ContrastMemory(nn.Module):
    """The two memory banks and their normalising constants (buffers: saved with a task's checkpoint).

    Args:
        num_data: Training samples ``N`` (one row each).
        dim: Embedding width.
        temperature: The NCE temperature :math:`\\tau`.
        momentum: Weight of a row's old value in its update.

    Example:
        >>> memory = ContrastMemory(num_data=10, dim=4)
        >>> memory.student.shape, float(memory.normalisers[0])
        (torch.Size([10, 4]), -1.0)
    """

    def __init__(self, num_data: int, dim: int = CRD_DEFAULTS["dim"],
                 temperature: float = CRD_DEFAULTS["nce_temperature"],
                 momentum: float = CRD_DEFAULTS["momentum"]) -> None:
        super().__init__()
        check_temperature(temperature)
        check_momentum(momentum)
        self.num_data, self.dim, self.temperature, self.momentum = num_data, dim, temperature, momentum
        bound = 1.0 / math.sqrt(dim / 3)  # the authors' initial rows: uniform in [-bound, bound]
        self.register_buffer("student", torch.rand(num_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("teacher", torch.rand(num_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("normalisers", torch.full((2,), -1.0))
        """``Z`` of the student's scores (against the teacher's bank) and of the teacher's; -1 until set."""

    def raw_scores(self, student: Tensor, teacher: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``exp(<v, m> / tau)`` of the student's embeddings against the teacher's bank and of the teacher's against
        the student's, at ``rows`` ``(B, 1 + K)`` (the positive first); the banks are constants.

        Computed in float32 at least, outside any autocast: ``exp(1 / 0.07)`` is 1.6e6, past float16's range.
        """
        size = rows.shape
        dtype = torch.promote_types(student.dtype, torch.float32)

        def scores(embedding: Tensor, bank: Tensor) -> Tensor:
            picked = bank.index_select(0, rows.flatten()).view(*size, self.dim).detach().to(dtype)
            return torch.exp(torch.bmm(picked, embedding.to(dtype).unsqueeze(2)).squeeze(2) / self.temperature)

        with torch.autocast(student.device.type, enabled=False):
            return scores(student, self.teacher), scores(teacher, self.student)

    @torch.no_grad()
    def update(self, indices: Tensor, student: Tensor, teacher: Tensor) -> None:
        """Move the rows of ``indices`` towards the batch's embeddings (the same update on every process when each
        is given every process's batch)."""
        for bank, embedding in ((self.student, student), (self.teacher, teacher)):
            mixed = bank.index_select(0, indices) * self.momentum + embedding.to(bank.dtype) * (1 - self.momentum)
            bank.index_copy_(0, indices, mixed / mixed.norm(dim=1, keepdim=True))

    def extra_repr(self) -> str:
        return (f"num_data={self.num_data}, dim={self.dim}, temperature={self.temperature}, "
                f"momentum={self.momentum}")


@full_precision
def crd_loss(
    student_logits: Tensor,
    targets: Tensor,
    student_scores: Tensor,
    teacher_scores: Tensor,
    num_data: int,
    crd_weight: float = CRD_DEFAULTS["crd_weight"],
    ce_weight: float = 1.0,
    kd_weight: float = 0.0,
    teacher_logits: Tensor | None = None,
    temperature: float = 4.0,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """``ce_weight * CE + crd_weight * (NCE(student scores) + NCE(teacher scores)) + kd_weight * T^2 KL``.

    Args:
        student_logits: ``(B, C)`` student logits.
        targets: ``(B,)`` class indices.
        student_scores: ``(B, 1 + K)`` normalised scores of the student's embeddings against the teacher's bank.
        teacher_scores: The same of the teacher's embeddings against the student's bank.
        num_data: Training samples ``N`` (the noise is ``1 / N``).
        crd_weight: Weight of the contrastive term, ``>= 0``.
        ce_weight: Weight of the label cross-entropy, ``>= 0``.
        kd_weight: Weight of Hinton's term, ``>= 0`` (0: the paper's CRD; 1: "CRD+KD").
        teacher_logits: The teacher's logits, needed when ``kd_weight > 0``.
        temperature: Hinton's temperature.
        label_smoothing: Smoothing of the label term (none by default).

    Returns:
        ``{"loss", "ce", "crd"}``, and ``"kd"`` with ``kd_weight > 0``: the total and its parts, unweighted.

    Example:
        >>> scores = torch.full((2, 5), 1e-3)
        >>> out = crd_loss(torch.zeros(2, 3), torch.tensor([0, 1]), scores, scores, num_data=100)
        >>> sorted(out)
        ['ce', 'crd', 'loss']
    """
    crd = nce_loss(student_scores, num_data) + nce_loss(teacher_scores, num_data)
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    out = {"loss": ce_weight * ce + crd_weight * crd, "ce": ce, "crd": crd}
    if kd_weight:
        if teacher_logits is None:
            raise ValueError("kd_weight > 0 needs the teacher's logits")
        kd = soft_target_kl(student_logits, teacher_logits, temperature)  # with T^2
        out["loss"] = out["loss"] + kd_weight * kd
        out["kd"] = kd
    return out


def check_momentum(momentum: float) -> None:
    """Refuse a memory momentum outside ``[0, 1)`` (1 would never move a row)."""
    if not 0 <= momentum < 1:
        raise Refusal(f"momentum (a memory row's weight in its update) must be in [0, 1), got {momentum}")


def check_crd_settings(crd_weight: float, ce_weight: float, kd_weight: float, dim: int, negatives: int,
                       nce_temperature: float, momentum: float) -> None:
    """Refuse weights that are negative or not finite, a non-positive width, number of negatives or temperature, and
    a momentum outside ``[0, 1)``."""
    check_temperature(nce_temperature)
    check_momentum(momentum)
    for name, weight in (("crd_weight", crd_weight), ("ce_weight", ce_weight), ("kd_weight", kd_weight)):
        check_weight(weight, name)
    check_positive(dim, "dim (the embedding width)")
    check_positive(negatives, "negatives (K, the negatives per sample)")


def crd_embedding(features: Tensor, linear: nn.Linear) -> Tensor:
    """Flatten, map, L2-normalise: the authors' ``Embed``.

    Example:
        >>> round(float(crd_embedding(torch.randn(3, 2, 2), nn.Linear(4, 5)).detach().norm(dim=1).mean()), 6)
        1.0
    """
    return F.normalize(linear(features.flatten(1)), dim=1)
