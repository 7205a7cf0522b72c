"""Divergences used to distil language models token by token: forward KL, reverse KL, generalised JSD (GKD).

Each is computed at every valid position (see :mod:`lightning_kd.losses.positions`) and averaged over
tokens; logits are divided by ``temperature`` and the divergence multiplied by ``T^2`` (Hinton's scaling,
so ``T`` does not change the gradients' size; with the default ``T = 1`` nothing changes). ``p`` is the
teacher's softmax, ``q`` the student's.

* **forward KL**, ``KL(p || q)``: word-level KD (Kim & Rush 2016); mean-seeking, the student covers
  everything the teacher deems likely.
* **reverse KL**, ``KL(q || p)``: mode-seeking (MiniLLM, Gu et al. 2024).
* **generalised Jensen-Shannon**, ``JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m)`` with the mixture
  ``m = beta p + (1 - beta) q`` (GKD, Agarwal et al. 2024, and Hugging Face TRL's ``generalized_jsd_loss``).
  ``beta`` is the **teacher's** weight in the mixture: as ``beta -> 0`` it behaves as the forward KL (scaled
  by ``beta``), as ``beta -> 1`` as the reverse KL. As TRL does, ``beta = 0`` and ``beta = 1`` are taken to
  be exactly the forward and the reverse KL (not the limits, which vanish). Projects disagree on the
  direction: some write the mixture as ``beta q + (1 - beta) p``, which swaps the two ends; here ``beta=0``
  is always forward KL.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import alpha_mix
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import (
    LossOutput,
    check_alpha,
    check_choice,
    check_same_shape,
    check_temperature,
)

__all__ = [
    "TOKEN_DIVERGENCES",
    "TokenDivergence",
    "TokenKDLoss",
    "generalized_jsd",
    "reverse_kl",
    "token_divergence",
    "token_kd_loss",
]

TokenDivergence = Literal["forward_kl", "reverse_kl", "jsd"]
"""The token-level divergences by name."""
TOKEN_DIVERGENCES: tuple[str, ...] = get_args(TokenDivergence)


def _log_probabilities(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    check_temperature(temperature)
    check_same_shape(student_logits, teacher_logits)
    return (F.log_softmax(student_logits / temperature, dim=-1),
            F.log_softmax(teacher_logits.detach() / temperature, dim=-1))


@per_position
def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(softmax(zs / T) || softmax(zt / T))``, averaged over tokens.

    Example:
        >>> z = torch.randn(2, 3, 5)
        >>> float(reverse_kl(z, z))
        0.0
    """
    log_q, log_p = _log_probabilities(student_logits, teacher_logits, temperature)
    return (log_q.exp() * (log_q - log_p)).sum(dim=-1).mean() * temperature**2


@per_position
def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> Tensor:
    """GKD's ``JSD(beta)`` (see the module), averaged over tokens; ``beta`` 0 and 1 are the forward and reverse KL.

    Example:
        >>> zs, zt = torch.randn(4, 6), torch.randn(4, 6)
        >>> forward = F.kl_div(zs.log_softmax(-1), zt.log_softmax(-1), reduction="batchmean", log_target=True)
        >>> bool(torch.isclose(generalized_jsd(zs, zt, beta=0.0), forward))
        True
    """
    check_alpha(beta, "beta")
    log_q, log_p = _log_probabilities(student_logits, teacher_logits, temperature)
    if beta == 0:
        divergence = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    elif beta == 1:
        divergence = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    else:
        log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
        divergence = (beta * (log_p.exp() * (log_p - log_m)).sum(dim=-1)
                      + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(dim=-1))
    return divergence.mean() * temperature**2


@per_position
def token_divergence(name: str, student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5,
                     temperature: float = 1.0) -> Tensor:
    """A token-level divergence by name: ``"forward_kl"``, ``"reverse_kl"`` or ``"jsd"`` (with ``beta``).

    Example:
        >>> zs, zt = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
        >>> bool(torch.isclose(token_divergence("jsd", zs, zt, beta=1.0), token_divergence("reverse_kl", zs, zt)))
        True
    """
    check_choice("token divergence", name, TOKEN_DIVERGENCES)
    if name != "jsd" and beta != 0.5:
        raise Refusal(f"beta applies to the 'jsd' divergence only, not {name!r}")
    if name == "forward_kl":
        return generalized_jsd(student_logits, teacher_logits, 0.0, temperature)
    if name == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, temperature)
    return generalized_jsd(student_logits, teacher_logits, beta, temperature)


@per_position
def token_kd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
                  divergence: str = "forward_kl", beta: float = 0.5, alpha: float = 0.5, temperature: float = 1.0,
                  label_smoothing: LabelSmoothing | None = None) -> LossOutput:
    """``(1 - alpha) * CE(zs, y) + alpha * D(zs, zt)`` with a token-level divergence ``D`` (see the module).

    ``alpha`` weights the divergence (Hinton's convention); with ``divergence="forward_kl"`` this is Hinton's
    loss (word-level KD). GKD's supervised form (Agarwal et al. 2024) is ``divergence="jsd"``, ``alpha=1``.

    Returns:
        ``{"loss": total, "ce": ce, "kd": D}``, the parts unweighted.

    Example:
        >>> from lightning_kd.losses import hinton_kd_loss
        >>> zs, zt, y = torch.randn(2, 5, 7), torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
        >>> ours, hinton = token_kd_loss(zs, zt, y, alpha=0.9, temperature=2.0), hinton_kd_loss(zs, zt, y, 0.9, 2.0)
        >>> bool(torch.isclose(ours["loss"], hinton["loss"]))
        True
    """
    check_alpha(alpha)
    kd = token_divergence(divergence, student_logits, teacher_logits, beta, temperature)
    ce = (label_smoothing or LabelSmoothing())(student_logits, targets)
    return {"loss": alpha_mix(ce, kd, alpha), "ce": ce, "kd": kd}


class TokenKDLoss(nn.Module):
    """Module form of :func:`token_kd_loss`, its arguments checked once.

    Example:
        >>> sorted(TokenKDLoss("jsd", beta=0.1)(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.zeros(2, 3).long()))
        ['ce', 'kd', 'loss']
    """

    def __init__(self, divergence: str = "forward_kl", beta: float = 0.5, alpha: float = 0.5,
                 temperature: float = 1.0, label_smoothing: LabelSmoothing | None = None) -> None:
        super().__init__()
        check_choice("token divergence", divergence, TOKEN_DIVERGENCES)
        check_alpha(beta, "beta")
        check_alpha(alpha)
        check_temperature(temperature)
        if divergence != "jsd" and beta != 0.5:
            raise Refusal(f"beta applies to the 'jsd' divergence only, not {divergence!r}")
        self.divergence, self.beta, self.alpha, self.temperature = divergence, beta, alpha, temperature
        self.label_smoothing = label_smoothing or LabelSmoothing()

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> LossOutput:
        return token_kd_loss(student_logits, teacher_logits, targets, self.divergence, self.beta, self.alpha,
                             self.temperature, self.label_smoothing)

    def extra_repr(self) -> str:
        beta = f", beta={self.beta}" if self.divergence == "jsd" else ""
        return f"divergence={self.divergence!r}{beta}, alpha={self.alpha}, temperature={self.temperature}"
