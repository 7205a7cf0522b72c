"""Several trained networks exported as one plain network: the (weighted) average of their softmax outputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_kd.errors import Refusal


def check_mixture_weights(weights: Sequence[float], count: int | None = None, name: str = "fusion weights",
                          per: str = "member") -> None:
    """Refuse weights of a mixture that are not one finite, non-negative number per ``per`` with a positive sum.

    The one check of every weighted mixture of the package: a fused network's members, a multi-teacher loss's teachers.

    Example:
        >>> check_mixture_weights([0.5, 0.5], 2)
        >>> check_mixture_weights([1.0, -1.0], 2)
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: fusion weights must be finite, >= 0 and not all 0, got [1.0, -1.0]
        >>> check_mixture_weights([1.0], 2, name="teacher_weights", per="teacher")
        Traceback (most recent call last):
        ...
        lightning_kd.errors.Refusal: teacher_weights has 1 entries for 2 teachers; give one per teacher
    """
    values = [float(w) for w in weights]
    if count is not None and len(values) != count:
        raise Refusal(f"{name} has {len(values)} entries for {count} {per}s; give one per {per}")
    if not values or any(not (0 <= w < math.inf) for w in values) or sum(values) <= 0:
        raise Refusal(f"{name} must be finite, >= 0 and not all 0, got {values}")


class SoftmaxEnsemble(nn.Module):
    """``log(sum_k w_k softmax(f_k(x_k)))``: logits whose softmax is the members' weighted average of probabilities.

    A plain ``nn.Module`` (save it with ``torch.save`` or its state dict, use it as a teacher), in eval mode as an
    ensemble is used. Without ``weights`` the members are averaged; given weights are normalised to sum to 1 and
    kept in the state dict (a fitted fusion travels with the network).

    Args:
        members: The networks.
        weights: One non-negative weight per member (default: equal).
        input_keys: The input of each member, when they read different inputs (views, modalities): ``forward``
            then takes a mapping from key to tensor; a tensor goes to every member.

    Example:
        >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> x = torch.randn(2, 4)
        >>> ensemble = SoftmaxEnsemble([a, b])
        >>> bool(torch.allclose(ensemble(x).softmax(1), (a(x).softmax(1) + b(x).softmax(1)) / 2))
        True
        >>> weighted = SoftmaxEnsemble([a, b], weights=[3.0, 1.0], input_keys=["input", "view_2"])
        >>> y = torch.randn(2, 4)
        >>> bool(torch.allclose(weighted({"input": x, "view_2": y}).softmax(1),
        ...                     0.75 * a(x).softmax(1) + 0.25 * b(y).softmax(1)))
        True
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 input_keys: Sequence[str] | None = None) -> None:
        super().__init__()
        if not members:
            raise Refusal("an ensemble needs at least one member")
        if input_keys is not None and len(input_keys) != len(members):
            raise Refusal(f"{len(input_keys)} input keys for {len(members)} members: give one per member")
        self.members = nn.ModuleList(members)
        self.num_classes = getattr(members[0], "num_classes", None)
        self.input_keys = list(input_keys) if input_keys is not None else None
        if weights is not None:
            check_mixture_weights(weights, len(members))
        given = torch.tensor(list(weights) if weights is not None else [1.0] * len(members))
        # kept with the weights only when given: an equal-weight ensemble's state dict is its members'
        self.register_buffer("weights", given / given.sum(), persistent=weights is not None)
        self.weighted = weights is not None

    def set_weights(self, weights: Tensor) -> None:
        """Replace the fusion weights (normalised to sum to 1), e.g. with weights fitted on held-out data."""
        if not self.weighted:
            raise Refusal("this ensemble was built without weights, so its state dict keeps none: build it with "
                          "weights (equal ones, say) to set them")
        check_mixture_weights(weights.tolist(), len(self.members))
        self.weights.copy_(weights / weights.sum())

    def member_inputs(self, x: Tensor | Mapping[str, Tensor]) -> list[Tensor]:
        """Each member's input: its key's tensor of a mapping (``"input"`` without input keys), or ``x`` itself."""
        if not isinstance(x, Mapping):
            return [x] * len(self.members)
        keys = self.input_keys or ["input"] * len(self.members)
        missing = sorted({key for key in keys if key not in x})
        if missing:
            raise Refusal(f"the batch has no {', '.join(map(repr, missing))} for the ensemble's members "
                          f"(it has {', '.join(map(repr, x))}): name the members' inputs in input_keys")
        return [x[key] for key in keys]

    def member_logits(self, x: Tensor | Mapping[str, Tensor]) -> list[Tensor]:
        """Every member's logits on its input."""
        return [member(inputs) for member, inputs in zip(self.members, self.member_inputs(x), strict=True)]

    def fuse(self, logits: Sequence[Tensor]) -> Tensor:
        """The ensemble's logits from its members' logits: ``log(sum_k w_k softmax(z_k))``."""
        log_probabilities = torch.stack([z.log_softmax(dim=-1) for z in logits])
        if not self.weighted:  # the mean, computed as it always was (recorded results stay bit for bit)
            return torch.logsumexp(log_probabilities, dim=0) - torch.log(torch.tensor(float(len(logits))))
        weights = self.weights.to(log_probabilities.dtype).view(-1, *[1] * (log_probabilities.dim() - 1))
        return torch.logsumexp(log_probabilities + weights.log(), dim=0)

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> Tensor:
        return self.fuse(self.member_logits(x))
