"""Born-Again Networks (Furlanello et al. 2018): BAN, BAN+L, CWTM, DKPP, and Hinton KD by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import soft_cross_entropy
from lightning_kd.losses.kd import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, hinton_kd_loss
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_alpha, check_choice, check_same_shape, check_temperature

__all__ = [
    "BORN_AGAIN_LOSSES",
    "BornAgainLoss",
    "BornAgainLossName",
    "ban_label_loss",
    "ban_loss",
    "born_again_loss",
    "cwtm_loss",
    "cwtm_weights",
    "dkpp_loss",
    "permute_non_argmax",
]

BornAgainLossName = Literal["ban", "ban+l", "cwtm", "dkpp", "kd"]
"""The Born-Again losses by name (what :class:`~lightning_kd.tasks.BornAgain` takes as ``loss``)."""
BORN_AGAIN_LOSSES: tuple[str, ...] = get_args(BornAgainLossName)


@per_position
def ban_loss(student_logits: Tensor, teacher_logits: Tensor) -> LossOutput:
    """BAN: cross-entropy against the teacher's softmax only (``T = 1``, no labels).

    ``-(softmax(zt) * log_softmax(zs)).sum(1).mean()``; it differs from ``KL(softmax(zt) || softmax(zs))``
    by the teacher's entropy, a constant, so the gradients are the same.

    Returns:
        ``{"loss": ...}``.
    """
    check_same_shape(student_logits, teacher_logits)
    return {"loss": soft_cross_entropy(student_logits, F.softmax(teacher_logits.detach(), dim=1))}


@per_position
def ban_label_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
                   label_smoothing: LabelSmoothing | None = None) -> LossOutput:
    """BAN+L: the BAN loss plus cross-entropy with the labels, an unweighted sum (the paper gives no weight).

    Returns:
        ``{"loss": ce + kd, "ce": ce, "kd": kd}``; ``ce`` smoothed by ``label_smoothing`` if given.
    """
    kd = ban_loss(student_logits, teacher_logits)["loss"]
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    return {"loss": ce + kd, "ce": ce, "kd": kd}


@per_position
def cwtm_weights(teacher_logits: Tensor) -> Tensor:
    """CWTM sample weights ``w_s = max_c p_t(c|x_s) / sum_u max_c p_t(c|x_u)``; they sum to 1 over the batch.

    The teacher's top probability is used whether or not the teacher is right.
    """
    confidence = F.softmax(teacher_logits.detach(), dim=1).amax(dim=1)
    return confidence / confidence.sum()


@per_position
def cwtm_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
              label_smoothing: LabelSmoothing | None = None) -> LossOutput:
    """CWTM (confidence weighted by teacher max): ``sum_s w_s * CE(zs_s, y_s)`` with :func:`cwtm_weights`.

    Under DDP the weights are normalised over each process's batch. Each sample's ``CE`` is smoothed
    by ``label_smoothing`` if given.

    Example:
        >>> import torch
        >>> zs, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
        >>> flat = torch.zeros(4, 5)  # an unsure teacher weighs every sample alike: plain cross-entropy
        >>> bool(torch.isclose(cwtm_loss(zs, flat, y)["loss"], F.cross_entropy(zs, y)))
        True
    """
    check_same_shape(student_logits, teacher_logits)
    per_sample = (label_smoothing or LabelSmoothing())(student_logits, targets, reduction="none")
    return {"loss": (cwtm_weights(teacher_logits) * per_sample).sum()}


def permute_non_argmax(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DKPP targets: keep each row's argmax in place, shuffle its other ``C - 1`` entries at random.

    One independent permutation per row (never across rows), drawn with one ``rand`` and two sorts:
    no Python loop over samples.

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
        >>> q = permute_non_argmax(p, torch.Generator().manual_seed(0))
        >>> q.argmax(1).tolist(), torch.equal(q.sort(1).values, p.sort(1).values)
        ([1, 0], True)
    """
    num_classes = probs.shape[1]
    is_top = F.one_hot(probs.argmax(dim=1), num_classes).bool()
    # random keys; the argmax gets a key above every other, so it sorts last
    keys = torch.rand(probs.shape, generator=generator, device="cpu" if generator is not None else probs.device)
    keys = keys.to(probs.device).masked_fill(is_top, 2.0)
    sources = keys.argsort(dim=1)  # the C-1 other positions in random order, then the argmax
    destinations = is_top.to(torch.uint8).argsort(dim=1, stable=True)  # the same positions in order, then the argmax
    return torch.empty_like(probs).scatter_(1, destinations, probs.gather(1, sources))


@per_position
def dkpp_loss(student_logits: Tensor, teacher_logits: Tensor, generator: torch.Generator | None = None) -> LossOutput:
    """DKPP (dark knowledge with permuted predictions): BAN's loss against :func:`permute_non_argmax` targets.

    A fresh permutation is drawn at every call (every training step).
    """
    check_same_shape(student_logits, teacher_logits)
    target = permute_non_argmax(F.softmax(teacher_logits.detach(), dim=1), generator)
    return {"loss": soft_cross_entropy(student_logits, target)}


_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor, float, float, LabelSmoothing | None], LossOutput]] = {
    "ban": lambda zs, zt, y, alpha, temperature, smoothing: ban_loss(zs, zt),
    "ban+l": lambda zs, zt, y, alpha, temperature, smoothing: ban_label_loss(zs, zt, y, smoothing),
    "cwtm": lambda zs, zt, y, alpha, temperature, smoothing: cwtm_loss(zs, zt, y, smoothing),
    "dkpp": lambda zs, zt, y, alpha, temperature, smoothing: dkpp_loss(zs, zt),
    "kd": hinton_kd_loss,
}
LABEL_TERM_LOSSES = ("ban+l", "cwtm", "kd")
"""The Born-Again losses with a label term (which label smoothing applies to)."""
assert set(_LOSSES) == set(BORN_AGAIN_LOSSES), "every Born-Again loss name has one implementation"


@per_position
def born_again_loss(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = DEFAULT_ALPHA,
    temperature: float = DEFAULT_TEMPERATURE,
    label_smoothing: LabelSmoothing | None = None,
) -> LossOutput:
    """Any Born-Again loss by name, as ``{"loss": total, ...parts}``.

    ``"ban"``: :func:`ban_loss`; ``"ban+l"``: :func:`ban_label_loss` (parts ``ce``, ``kd``);
    ``"cwtm"``: :func:`cwtm_loss`; ``"dkpp"``: :func:`dkpp_loss`; ``"kd"``: Hinton's
    :func:`~lightning_kd.losses.hinton_kd_loss` with ``alpha`` and ``temperature`` (parts ``ce``,
    ``kd``), which turns a sequence of generations into vanilla KD from a teacher trained in the same
    run. ``alpha`` and ``temperature`` are used by ``"kd"`` only; the paper's losses use ``T = 1``.
    ``label_smoothing`` smooths the label term of ``"ban+l"``, ``"cwtm"`` and ``"kd"``.

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> sorted(born_again_loss("ban+l", zs, zt, y))
        ['ce', 'kd', 'loss']
    """
    check_choice("Born-Again loss", name, BORN_AGAIN_LOSSES)
    return _LOSSES[name](student_logits, teacher_logits, targets, alpha, temperature, label_smoothing)


class BornAgainLoss(nn.Module):
    """Module form of :func:`born_again_loss`: the name, and for ``"kd"`` alpha and T, checked once.

    ``alpha`` and ``temperature`` are for ``"kd"`` only (default: Hinton's 0.9 and 4); given with one
    of the paper's losses they are refused rather than ignored, since those use ``T = 1`` and no weight.

    Example:
        >>> import torch
        >>> criterion = BornAgainLoss("dkpp")
        >>> criterion(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))["loss"].ndim
        0
        >>> BornAgainLoss("ban", temperature=2.0)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: alpha and temperature apply to loss='kd' only; 'ban' uses T = 1 as in the paper
    """

    def __init__(self, name: str = "ban", alpha: float | None = None, temperature: float | None = None,
                 label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        check_choice("Born-Again loss", name, BORN_AGAIN_LOSSES)
        if name != "kd" and (alpha is not None or temperature is not None):
            raise Refusal(f"alpha and temperature apply to loss='kd' only; {name!r} uses T = 1 as in the paper")
        self.label_smoothing = label_smoothing or LabelSmoothing()
        self.name = name
        self.alpha = DEFAULT_ALPHA if alpha is None else alpha
        self.temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
        check_alpha(self.alpha)
        check_temperature(self.temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> LossOutput:
        return born_again_loss(self.name, student_logits, teacher_logits, targets, self.alpha, self.temperature,
                               self.label_smoothing)

    def extra_repr(self) -> str:
        smoothing = f", label_smoothing={self.label_smoothing!r}" if self.label_smoothing.eps else ""
        if self.name == "kd":
            return f"name={self.name!r}, alpha={self.alpha}, temperature={self.temperature}{smoothing}"
        return f"name={self.name!r}{smoothing}"
