"""DenseNet-BC for 32x32 inputs (Huang et al. 2017): bottleneck layers and compressed transitions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        inner = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.dropout(self.conv2(F.relu(self.bn2(out))))
        return torch.cat([x, out], dim=1)


class Transition(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_planes), nn.ReLU(), nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.AvgPool2d(2)
        )


def dense_block_channels(depth: int, growth_rate: int, compression: float = 0.5) -> list[tuple[int, int]]:
    """The input and output channels of each dense block of ``DenseNet(depth, growth_rate, compression)``.

    Example:
        >>> dense_block_channels(88, 60)  # DenseNet-90-60 as this package reads it
        [(120, 960), (480, 1320), (660, 1500)]
    """
    if depth < 10 or (depth - 4) % 6:
        raise Refusal(f"DenseNet-BC depth must be 6n + 4 with n >= 1, got {depth}")
    layers_per_block, planes, channels = (depth - 4) // 6, 2 * growth_rate, []
    for index in range(3):
        channels.append((planes, planes + layers_per_block * growth_rate))
        planes = channels[-1][1] if index == 2 else int(channels[-1][1] * compression)
    return channels


class DenseNet(ClassifierNetwork):
    """DenseNet-BC-depth-growth_rate with three dense blocks.

    Args:
        depth: ``6n + 4`` (e.g. 100 for DenseNet-BC-100-12, 112 for BAN's DenseNet-112-33).
        growth_rate: Channels each layer adds (``k``).
        compression: Channel reduction at each transition (``theta``).
        dropout: Dropout after each 3x3 convolution.
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = DenseNet(depth=10, growth_rate=4, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    he_init = True

    def __init__(
        self,
        depth: int = 100,
        growth_rate: int = 12,
        compression: float = 0.5,
        dropout: float = 0.0,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise Refusal(f"DenseNet-BC depth must be 6n + 4 with n >= 1, got {depth}")
        if not 0 < compression <= 1:
            raise Refusal(f"compression must be in (0, 1], got {compression}")
        layers_per_block = (depth - 4) // 6
        planes = 2 * growth_rate
        self.stem = nn.Conv2d(in_channels, planes, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for index in range(3):
            layers = []
            for _ in range(layers_per_block):
                layers.append(Bottleneck(planes, growth_rate, dropout))
                planes += growth_rate
            blocks.append(nn.Sequential(*layers))
            if index < 2:
                out_planes = int(planes * compression)
                blocks.append(Transition(planes, out_planes))
                planes = out_planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.num_classes = num_classes
        self.num_features = planes
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        # blocks alternate dense block, transition (which halves the resolution), ...: the dense blocks end the stages
        return tuple(f"blocks.{i}" for i in range(0, len(self.blocks), 2))

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)



@register_model(network=DenseNet, depth=100, growth_rate=12)
def densenet_bc_100_12(num_classes: int = 100, in_channels: int = 3) -> DenseNet:
    """DenseNet-BC-100 with growth rate 12 (0.8M parameters)."""
    return DenseNet(100, 12, num_classes=num_classes, in_channels=in_channels)


@register_model(network=DenseNet, depth=88, growth_rate=60)
def densenet_90_60(num_classes: int = 100, in_channels: int = 3) -> DenseNet:
    """The Born-Again paper's DenseNet-90-60 (Tables 3 and 5), read as DenseNet-BC-88-60: 14 bottleneck layers a
    block, growth 60 (15.2M parameters; the paper gives 16.1M and 22.4M, and no 6n + 4 depth is 90)."""
    return DenseNet(88, 60, num_classes=num_classes, in_channels=in_channels)


@register_model(network=DenseNet, depth=112, growth_rate=33)
def densenet_112_33(num_classes: int = 100, in_channels: int = 3) -> DenseNet:
    """DenseNet-BC-112-33, the Born-Again Networks teacher."""
    return DenseNet(112, 33, num_classes=num_classes, in_channels=in_channels)
