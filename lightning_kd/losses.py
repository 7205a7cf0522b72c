"""Distillation losses as pure functions, with ``nn.Module`` forms beside them.

Conventions (see METHODS.md): ``student_logits`` and ``teacher_logits`` are ``(B, C)``; the teacher's
logits are treated as constants (detached here, whatever the caller did). ``alpha`` always weights the
*distillation* term and ``1 - alpha`` the label term (Hinton's convention; torchdistill's ``KDLoss``
uses the reverse).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_temperature(temperature: float) -> None:
    """Raise ``ValueError`` unless ``temperature > 0``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def check_alpha(alpha: float) -> None:
    """Raise ``ValueError`` unless ``0 <= alpha <= 1``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; do student and teacher predict the same number of classes?"
        )


def soft_target_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(softmax(zt / T) || softmax(zs / T))``, averaged over the batch.

    The ``T^2`` factor keeps the soft-target gradients on the scale of a label loss (Hinton et al.).

    Example:
        >>> import torch
        >>> z = torch.randn(4, 10)
        >>> float(soft_target_kl(z, z, temperature=4.0))
        0.0
    """
    check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    # 'batchmean' divides by B, as KL's definition asks; 'mean' would divide by B * C
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hinton_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Vanilla KD: ``(1 - alpha) * CE(zs, y) + alpha * T^2 * KL(softmax(zt/T) || softmax(zs/T))``.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (constants).
        targets: ``(B,)`` class indices.
        alpha: Weight of the distillation term; ``1 - alpha`` weights cross-entropy.
        temperature: Softmax temperature ``T > 0``.

    Returns:
        ``(total, ce, kd)``: the weighted loss and its two unweighted parts.

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> total, ce, kd = hinton_kd_loss(zs, zt, y, alpha=0.9, temperature=4.0)
        >>> bool(torch.isclose(total, 0.1 * ce + 0.9 * kd))
        True
    """
    check_alpha(alpha)
    ce = F.cross_entropy(student_logits, targets)
    kd = soft_target_kl(student_logits, teacher_logits, temperature)
    return (1 - alpha) * ce + alpha * kd, ce, kd


class HintonKDLoss(nn.Module):
    """Module form of :func:`hinton_kd_loss`, validating ``alpha`` and ``temperature`` once.

    Example:
        >>> import torch
        >>> loss = HintonKDLoss(alpha=0.5, temperature=2.0)
        >>> total, ce, kd = loss(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    def __init__(self, alpha: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__()
        check_alpha(alpha)
        check_temperature(temperature)
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return hinton_kd_loss(student_logits, teacher_logits, targets, self.alpha, self.temperature)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}"


# -- Born-Again Networks (Furlanello et al. 2018) ------------------------------------------------------


def soft_cross_entropy(student_logits: Tensor, target_probs: Tensor) -> Tensor:
    """``-(p * log_softmax(zs)).sum(1).mean()``: cross-entropy against a distribution ``p`` per sample.

    Example:
        >>> import torch
        >>> y = torch.tensor([2, 0])
        >>> z = torch.randn(2, 3)
        >>> bool(torch.isclose(soft_cross_entropy(z, F.one_hot(y, 3).float()), F.cross_entropy(z, y)))
        True
    """
    if student_logits.shape != target_probs.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and target probabilities "
            f"{tuple(target_probs.shape)} differ in shape"
        )
    return -(target_probs.detach() * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()


def ban_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """BAN: cross-entropy against the teacher's softmax only (``T = 1``, no labels).

    ``-(softmax(zt) * log_softmax(zs)).sum(1).mean()``; it differs from ``KL(softmax(zt) || softmax(zs))``
    by the teacher's entropy, a constant, so the gradients are the same.
    """
    _check_logits(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, F.softmax(teacher_logits.detach(), dim=1))


def ban_label_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """BAN+L: the BAN loss plus cross-entropy with the labels, an unweighted sum (the paper gives no weight).

    Returns:
        ``(total, ce, kd)`` with ``total = ce + kd``.
    """
    kd = ban_loss(student_logits, teacher_logits)
    ce = F.cross_entropy(student_logits, targets)
    return ce + kd, ce, kd


def cwtm_weights(teacher_logits: Tensor) -> Tensor:
    """CWTM sample weights ``w_s = max_c p_t(c|x_s) / sum_u max_c p_t(c|x_u)``; they sum to 1 over the batch.

    The teacher's top probability is used whether or not the teacher is right.
    """
    confidence = F.softmax(teacher_logits.detach(), dim=1).amax(dim=1)
    return confidence / confidence.sum()


def cwtm_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
    """CWTM (confidence weighted by teacher max): ``sum_s w_s * CE(zs_s, y_s)`` with :func:`cwtm_weights`.

    Under DDP the weights are normalised over each process's batch.

    Example:
        >>> import torch
        >>> zs, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
        >>> flat = torch.zeros(4, 5)  # an unsure teacher weighs every sample alike: plain cross-entropy
        >>> bool(torch.isclose(cwtm_loss(zs, flat, y), F.cross_entropy(zs, y)))
        True
    """
    _check_logits(student_logits, teacher_logits)
    per_sample = F.cross_entropy(student_logits, targets, reduction="none")
    return (cwtm_weights(teacher_logits) * per_sample).sum()


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


def dkpp_loss(student_logits: Tensor, teacher_logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DKPP (dark knowledge with permuted predictions): BAN's loss against :func:`permute_non_argmax` targets.

    A fresh permutation is drawn at every call (every training step).
    """
    _check_logits(student_logits, teacher_logits)
    target = permute_non_argmax(F.softmax(teacher_logits.detach(), dim=1), generator)
    return soft_cross_entropy(student_logits, target)


BORN_AGAIN_LOSSES = ("ban", "ban+l", "cwtm", "dkpp", "kd")
"""Names :class:`BornAgainLoss` (and :class:`~lightning_kd.tasks.BornAgain`) accept."""


def born_again_loss(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
) -> dict[str, Tensor]:
    """Any Born-Again loss by name, as ``{"loss": total, ...parts}``.

    ``"ban"``: :func:`ban_loss`; ``"ban+l"``: :func:`ban_label_loss` (parts ``ce``, ``kd``);
    ``"cwtm"``: :func:`cwtm_loss`; ``"dkpp"``: :func:`dkpp_loss`; ``"kd"``: Hinton's
    :func:`hinton_kd_loss` with ``alpha`` and ``temperature`` (parts ``ce``, ``kd``), which turns a
    sequence of generations into vanilla KD from a teacher trained in the same run. ``alpha`` and
    ``temperature`` are used by ``"kd"`` only; the paper's losses use ``T = 1``.

    Example:
        >>> import torch
        >>> zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
        >>> sorted(born_again_loss("ban+l", zs, zt, y))
        ['ce', 'kd', 'loss']
    """
    if name == "ban":
        return {"loss": ban_loss(student_logits, teacher_logits)}
    if name == "ban+l":
        total, ce, kd = ban_label_loss(student_logits, teacher_logits, targets)
        return {"loss": total, "ce": ce, "kd": kd}
    if name == "cwtm":
        return {"loss": cwtm_loss(student_logits, teacher_logits, targets)}
    if name == "dkpp":
        return {"loss": dkpp_loss(student_logits, teacher_logits)}
    if name == "kd":
        total, ce, kd = hinton_kd_loss(student_logits, teacher_logits, targets, alpha, temperature)
        return {"loss": total, "ce": ce, "kd": kd}
    raise ValueError(f"unknown Born-Again loss {name!r}; choose one of {', '.join(BORN_AGAIN_LOSSES)}")


class BornAgainLoss(nn.Module):
    """Module form of :func:`born_again_loss`, checking the name (and, for ``"kd"``, alpha and T) once.

    Example:
        >>> import torch
        >>> criterion = BornAgainLoss("dkpp")
        >>> criterion(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))["loss"].ndim
        0
    """

    def __init__(self, name: str = "ban", alpha: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__()
        if name not in BORN_AGAIN_LOSSES:
            raise ValueError(f"unknown Born-Again loss {name!r}; choose one of {', '.join(BORN_AGAIN_LOSSES)}")
        check_alpha(alpha)
        check_temperature(temperature)
        self.name = name
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return born_again_loss(self.name, student_logits, teacher_logits, targets, self.alpha, self.temperature)

    def extra_repr(self) -> str:
        if self.name == "kd":
            return f"name={self.name!r}, alpha={self.alpha}, temperature={self.temperature}"
        return f"name={self.name!r}"
