"""Several students fused (Wu et al. 2019): a weighted average of their probabilities, the weights fixed or fitted,
and the mutual term that lets them learn from each other (as Deep Mutual Learning's peers do).

Example:
    >>> import torch
    >>> p = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.6, 0.4]]])  # 2 students, 2 samples, 2 classes
    >>> fused_probabilities(p, torch.tensor([0.5, 0.5]))
    tensor([[0.7500, 0.2500],
            [0.4000, 0.6000]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.divergences import soft_target_kl

__all__ = ["fit_fusion_weights", "fused_probabilities", "mutual_kl"]


def fused_probabilities(probabilities: Tensor, weights: Tensor) -> Tensor:
    """``sum_m w_m p_m``: the students' ``(M, N, C)`` probabilities averaged with the ``(M,)`` weights."""
    return torch.einsum("m,mnc->nc", weights.to(probabilities.dtype), probabilities)


def fit_fusion_weights(probabilities: Tensor, targets: Tensor, iterations: int = 500, tolerance: float = 1e-10
                       ) -> Tensor:
    """The fusion weights that maximise the likelihood of ``targets`` under the fused probabilities.

    The negative log-likelihood of a mixture is convex in its weights; the EM update
    ``w_m <- mean_n w_m p_m(y_n | x_n) / sum_k w_k p_k(y_n | x_n)`` climbs to its maximum over the simplex (in float64,
    from equal weights, until no weight moves more than ``tolerance``). Deterministic: every DDP process that fits
    on the same gathered outputs gets the same weights.

    Args:
        probabilities: ``(M, N, C)``: each of the ``M`` students' probabilities on ``N`` held-out samples.
        targets: ``(N,)`` class indices.

    Returns:
        ``(M,)`` non-negative weights summing to 1.

    Example:
        >>> import torch
        >>> good = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2]])
        >>> noise = torch.full((3, 2), 0.5)
        >>> weights = fit_fusion_weights(torch.stack([good, noise]), torch.tensor([0, 1, 0]))
        >>> [round(w, 3) for w in weights.tolist()]
        [1.0, 0.0]
    """
    if probabilities.dim() != 3 or targets.shape != probabilities.shape[1:2]:
        raise Refusal(f"fit_fusion_weights takes (M, N, C) probabilities and (N,) targets, got "
                      f"{tuple(probabilities.shape)} and {tuple(targets.shape)}")
    if probabilities.shape[1] == 0:
        raise Refusal("no held-out samples to fit the fusion weights on")
    chosen = probabilities.double().gather(2, targets.long().view(1, -1, 1).expand(len(probabilities), -1, 1))
    chosen = chosen.squeeze(2).clamp_min(1e-300)  # (M, N): each student's probability of the true class
    weights = torch.full((len(probabilities),), 1.0 / len(probabilities), dtype=torch.float64)
    for _ in range(iterations):
        responsibilities = weights[:, None] * chosen
        updated = (responsibilities / responsibilities.sum(0, keepdim=True)).mean(1)
        moved = float((updated - weights).abs().max())
        weights = updated
        if moved < tolerance:
            break
    return weights / weights.sum()


def mutual_kl(logits: Sequence[Tensor]) -> Tensor:
    """``sum_m 1/(M-1) sum_{l != m} KL(softmax(z_l) || softmax(z_m))``, each target ``z_l`` detached (DML's term).

    Example:
        >>> import torch
        >>> z = torch.randn(4, 3)
        >>> float(mutual_kl([z, z, z]))
        0.0
    """
    if len(logits) < 2:
        raise Refusal(f"the mutual term needs at least 2 students, got {len(logits)}")
    others = len(logits) - 1
    return sum(soft_target_kl(z, other, 1.0) / others  # soft_target_kl detaches its target
               for m, z in enumerate(logits) for l_index, other in enumerate(logits) if l_index != m)
