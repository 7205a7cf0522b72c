"""Deep Mutual Learning (Zhang et al. 2018): K peers learn from the labels and from each other.

Peer ``k``'s loss is ``L_k = CE(z_k, y) + 1/(K - 1) * sum_{l != k} KL(softmax(z_l) || softmax(z_k))``
(``T = 1``, the KL averaged over the batch), the other peers' predictions detached: no gradient flows
into a peer through its role as another's target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.errors import Refusal
from lightning_kd.losses.label_smoothing import LabelSmoothing
from lightning_kd.losses.positions import per_position
from lightning_kd.losses.validation import LossOutput, check_same_shape

__all__ = ["dml_loss", "dml_peer_loss"]


def _check_peers(peer_logits: Sequence[Tensor]) -> None:
    if len(peer_logits) < 2:
        raise Refusal(f"mutual learning needs at least 2 peers, got {len(peer_logits)}")
    for index, logits in enumerate(peer_logits[1:], start=2):
        check_same_shape(peer_logits[0], logits, what=f"peer {index}'s logits")


@per_position
def dml_peer_loss(peer_logits: Sequence[Tensor], peer: int, targets: Tensor,
                  label_smoothing: LabelSmoothing | None = None) -> LossOutput:
    """Peer ``peer``'s (0-based) loss: ``CE(z_k, y) + 1/(K-1) sum_{l != k} KL(softmax(z_l) || softmax(z_k))``.

    Returns:
        ``{"loss": ce + kl, "ce": ce, "kl": kl}``; the other peers' logits enter as constants.

    Example:
        >>> import torch
        >>> z = [torch.randn(4, 3), torch.randn(4, 3)]
        >>> out = dml_peer_loss(z, 0, torch.tensor([0, 1, 2, 0]))
        >>> bool(torch.isclose(out["loss"], out["ce"] + out["kl"]))
        True
    """
    _check_peers(peer_logits)
    log_q = F.log_softmax(peer_logits[peer], dim=1)
    kl = sum(F.kl_div(log_q, F.log_softmax(other.detach(), dim=1), reduction="batchmean", log_target=True)
             for index, other in enumerate(peer_logits) if index != peer) / (len(peer_logits) - 1)
    ce = (label_smoothing or LabelSmoothing())(peer_logits[peer], targets)
    return {"loss": ce + kl, "ce": ce, "kl": kl}


@per_position
def dml_loss(peer_logits: Sequence[Tensor], targets: Tensor, label_smoothing: LabelSmoothing | None = None
             ) -> LossOutput:
    """Every peer's loss and their sum (what one backward of the simultaneous scheme minimises).

    Returns:
        ``{"loss": sum_k L_k, "peer_1/ce": ..., "peer_1/kl": ..., "peer_2/ce": ..., ...}`` (peers counted from 1).

    Example:
        >>> import torch
        >>> z = [torch.randn(4, 3) for _ in range(3)]
        >>> sorted(dml_loss(z, torch.tensor([0, 1, 2, 0])))[:3]
        ['loss', 'peer_1/ce', 'peer_1/kl']
    """
    _check_peers(peer_logits)
    parts: dict[str, Tensor] = {}
    total = None
    for peer in range(len(peer_logits)):
        out = dml_peer_loss(peer_logits, peer, targets, label_smoothing)
        parts[f"peer_{peer + 1}/ce"], parts[f"peer_{peer + 1}/kl"] = out["ce"], out["kl"]
        total = out["loss"] if total is None else total + out["loss"]
    assert total is not None
    return {"loss": total, **parts}
