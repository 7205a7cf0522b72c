"""Identical networks run as one vectorised model: ``torch.func.stack_module_state``'s layout + ``vmap``.

The networks stay ordinary modules (their own parameters, buffers, checkpoints and optimizers); each
forward stacks their current parameters and buffers along a new first dimension, runs one
``vmap``-ed ``functional_call`` of a weightless (meta-device) copy, and writes the updated buffers
(BatchNorm running statistics) back into each network. Gradients flow through the stacking into each
network's own parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lightning_kd.errors import Refusal


def check_identical(networks: Sequence[nn.Module]) -> None:
    """Raise ``ValueError`` unless every network has the first one's class and parameter and buffer shapes."""
    first = networks[0]
    shapes = {name: tuple(t.shape) for name, t in [*first.named_parameters(), *first.named_buffers()]}
    for index, network in enumerate(networks[1:], start=2):
        other = {name: tuple(t.shape) for name, t in [*network.named_parameters(), *network.named_buffers()]}
        if type(network) is not type(first) or other != shapes:
            raise Refusal(
                f"the batched path runs identical networks only: network {index} ({type(network).__name__}) differs "
                f"from network 1 ({type(first).__name__}) in class or in its parameters' shapes"
            )


class StackedForward:
    """Run identical ``networks`` on the same input as one vectorised call; returns ``(K, B, ...)``.

    Not an ``nn.Module``: it holds no weights of its own and registers nothing, so a task holding it
    keeps its state dict (and checkpoints) per network.

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> nets = [SmallCNN(widths=(4, 8), num_classes=10) for _ in range(3)]
        >>> x = torch.randn(2, 1, 8, 8)
        >>> out = StackedForward(nets)(x)
        >>> out.shape, bool(torch.allclose(out[1], nets[1](x), atol=1e-6))
        (torch.Size([3, 2, 10]), True)
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        if len(networks) < 1:
            raise Refusal("nothing to stack")
        check_identical(networks)
        self._networks = list(networks)  # the caller owns them
        self._template = copy.deepcopy(networks[0]).to("meta")  # the computation, no storage

    def __call__(self, x: Tensor) -> Tensor:
        networks = self._networks
        self._template.train(networks[0].training)
        names = [name for name, _ in networks[0].named_parameters()]
        buffer_names = [name for name, _ in networks[0].named_buffers()]
        parameters = [dict(network.named_parameters()) for network in networks]
        buffers_of = [dict(network.named_buffers()) for network in networks]
        params = {name: torch.stack([p[name] for p in parameters]) for name in names}
        buffers = {name: torch.stack([b[name] for b in buffers_of]) for name in buffer_names}

        def one(p: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
            return functional_call(self._template, (p, b), (x,))

        out = vmap(one, randomness="different")(params, buffers)
        with torch.no_grad():  # BatchNorm updated the stacked statistics in place: hand each network its own
            for index, own in enumerate(buffers_of):
                for name in buffer_names:
                    own[name].copy_(buffers[name][index])
        return out
