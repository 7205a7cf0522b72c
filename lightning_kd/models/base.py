"""The interface every network in the zoo follows."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClassifierNetwork(nn.Module):
    """A classifier split into a feature extractor and a linear head.

    Distillation methods need both the logits and the penultimate features (feature-matching
    losses, projectors, distribution matching), so every network of the zoo implements
    :meth:`forward_features` (input -> pooled penultimate features) and :meth:`forward_head`
    (features -> logits). ``forward`` returns logits only, so a zoo network is a drop-in
    ``nn.Module`` anywhere else.

    Attributes:
        num_classes: Number of output classes.
        num_features: Width of the penultimate features.
    """

    num_classes: int
    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the penultimate features, shape ``(B, num_features)``."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Map penultimate features to logits, shape ``(B, num_classes)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, features)`` from one pass."""
        features = self.forward_features(x)
        return self.forward_head(features), features


def logits_and_features(network: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Run any network, returning its penultimate features where it can give them.

    Zoo networks return ``(logits, features)``; an arbitrary ``nn.Module`` returns
    ``(logits, None)``.
    """
    if isinstance(network, ClassifierNetwork):
        return network.forward_with_features(x)
    return network(x), None


def count_parameters(network: nn.Module) -> int:
    """Number of parameters of a network (trainable or not)."""
    return sum(p.numel() for p in network.parameters())


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """He-normal convolutions, unit BatchNorm: the CIFAR ResNet/WRN convention (linears keep torch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
