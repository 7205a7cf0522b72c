"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-d-k with pre-activation blocks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # the projection shortcut sees the pre-activated input, as in the authors' code
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(ClassifierNetwork):
    """WRN-depth-widen_factor for 32x32 inputs.

    Args:
        depth: ``6n + 4`` (16, 28, 40, ...).
        widen_factor: Channel multiplier ``k``.
        dropout: Dropout between the convolutions of a block.
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = WideResNet(depth=16, widen_factor=2, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    he_init = True

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise Refusal(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, planes in enumerate(widths[1:]):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(*[
                WideBlock(in_planes if b == 0 else planes, planes, stride if b == 0 else 1, dropout)
                for b in range(blocks_per_stage)
            ]))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(self.num_features)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"stages.{i}" for i in range(len(self.stages)))

    @property
    def preact_stage_names(self) -> tuple[str, ...]:
        # pre-activation blocks: a stage's output meets its BatchNorm in the next stage's first block (the last
        # stage's, in the final one)
        return (*(f"stages.{i}.0.bn1" for i in range(1, len(self.stages))), "bn")

    @property
    def preact_batchnorm_names(self) -> tuple[str, ...]:
        """The BatchNorms whose outputs are the pre-activation stages (their affine parameters describe them)."""
        return self.preact_stage_names

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stages(self.stem(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)



def _preset(depth: int, widen_factor: int) -> None:
    name = f"wrn_{depth}_{widen_factor}"

    def constructor(num_classes: int = 100, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen_factor, dropout, num_classes, in_channels)

    constructor.__name__ = name
    register_model(name, WideResNet, depth=depth, widen_factor=widen_factor)(constructor)


for _depth, _k in ((16, 2), (16, 4), (16, 8), (28, 1), (28, 10), (40, 1), (40, 2), (40, 4)):
    _preset(_depth, _k)
