"""Several trained networks exported as one plain network: the average of their softmax outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal


class SoftmaxEnsemble(nn.Module):
    """``log(mean_k softmax(f_k(x)))``: logits whose softmax is the members' averaged probabilities.

    A plain ``nn.Module`` (save it with ``torch.save`` or its state dict, use it as a teacher), in
    eval mode as an ensemble is used.

    Example:
        >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> x = torch.randn(2, 4)
        >>> ensemble = SoftmaxEnsemble([a, b])
        >>> bool(torch.allclose(ensemble(x).softmax(1), (a(x).softmax(1) + b(x).softmax(1)) / 2))
        True
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise Refusal("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.num_classes = getattr(members[0], "num_classes", None)

    def forward(self, x: Tensor) -> Tensor:
        log_probabilities = torch.stack([member(x).log_softmax(dim=1) for member in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - torch.log(torch.tensor(float(len(self.members))))
