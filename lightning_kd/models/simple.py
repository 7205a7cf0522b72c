"""Small networks for the embedded data sets (digits 8x8, MNIST 28x28)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model


class MLP(ClassifierNetwork):
    """Fully connected network on flattened inputs.

    Args:
        input_shape: Shape of one input, e.g. ``(1, 8, 8)`` (linked from the data module by the CLI).
        hidden_sizes: Width of each hidden layer; the last one is the feature width.
        dropout: Dropout after each hidden layer.
        num_classes: Number of classes (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = MLP(input_shape=(1, 8, 8), hidden_sizes=(32,), num_classes=10)
        >>> net(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        hidden_sizes: Sequence[int] = (128,),
        dropout: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise Refusal("MLP needs at least one hidden layer")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        stages = []
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            stages.append(f"body.{len(layers) - 1}")
            width = hidden
        self.body = nn.Sequential(*layers)
        self._stage_names = tuple(stages)
        self.num_classes = num_classes
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The hidden layers' outputs (an MLP has no resolutions; its hidden layers play the stages' part)."""
        return self._stage_names

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)



class SmallCNN(ClassifierNetwork):
    """Conv-BN-ReLU blocks (each but the last followed by 2x2 max pooling), global average pooling.

    Works for any input of at least ``2 ** (len(widths) - 1)`` pixels a side (8x8 digits, 28x28 MNIST).

    Args:
        widths: Channels of each convolutional block.
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = SmallCNN(widths=(8, 16), num_classes=10, in_channels=1)
        >>> net(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    he_init = True

    def __init__(self, widths: Sequence[int] = (32, 64), num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if not widths:
            raise Refusal("SmallCNN needs at least one convolutional block")
        layers: list[nn.Module] = []
        in_planes = in_channels
        stages = []
        for index, planes in enumerate(widths):
            layers += [nn.Conv2d(in_planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU()]
            stages.append(f"body.{len(layers) - 1}")  # the block's ReLU, before pooling halves the resolution
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_planes = planes
        self.body = nn.Sequential(*layers)
        self._stage_names = tuple(stages)
        self.num_classes = num_classes
        self.num_features = in_planes
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return self._stage_names

    @property
    def preact_stage_names(self) -> tuple[str, ...]:
        """Each block's BatchNorm, whose output its ReLU takes."""
        return tuple(f"body.{int(name.split('.')[1]) - 1}" for name in self._stage_names)

    @property
    def preact_batchnorm_names(self) -> tuple[str, ...]:
        """The BatchNorms whose outputs are the pre-activation stages (their affine parameters describe them)."""
        return self.preact_stage_names

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)



@register_model(network=MLP, hidden_sizes=(128,))
def mlp(num_classes: int = 10, input_shape: Sequence[int] = (1, 8, 8), hidden_sizes: Sequence[int] = (128,)) -> MLP:
    """One-hidden-layer MLP."""
    return MLP(input_shape, hidden_sizes, num_classes=num_classes)


@register_model(network=SmallCNN, widths=(32, 64))
def small_cnn(num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (32, 64)) -> SmallCNN:
    """Two-block CNN for digits/MNIST."""
    return SmallCNN(widths, num_classes, in_channels)
