"""Residual students shaped after a DenseNet teacher (Born-Again Networks, Table 5).

The Born-Again paper trains ResNet students of a DenseNet-90-60 teacher in which "all BAN architectures share the
first (conv1) and last (fc-output) layer with the teacher, which are frozen", each dense block replaced by
residual blocks whose widths are a ratio of the dense block's. The paper gives names and parameter counts
(BAN-Pre-ResNet-14-0.5, 7.3M; BAN-Wide-ResNet-4-0.5, 24.3M), not the blocks' layout. This package reads it so:

* the stem is the DenseNet's (one 3x3 convolution to ``2 * growth_rate`` channels) and the head too (BatchNorm,
  ReLU, pooling, a linear layer over the last dense block's output channels): both can be inherited
  (``inherit_layers: [stem, classifier]``);
* stage ``i`` replaces dense block ``i``: ``blocks_per_stage`` pre-activation residual blocks from the previous
  stage's width (the stem's for the first) to the dense block's output channels, at the block's resolution
  (stride 2 where a transition halved it);
* inside a block the width is ``ratio`` times the dense block's input channels: ``"bottleneck"`` blocks
  (Pre-ResNet: 1x1, 3x3, 1x1) or ``"wide"`` blocks (Wide-ResNet: two 3x3).

The parameter counts this gives, beside the paper's, are in ``docs/methods/born_again.rst``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.densenet import dense_block_channels
from lightning_kd.models.registry import register_model

BlockKind = Literal["bottleneck", "wide"]


class PreActBlock(nn.Module):
    """A pre-activation residual block, ``in_planes -> planes``, ``mid`` channels inside."""

    def __init__(self, in_planes: int, mid: int, planes: int, stride: int, kind: BlockKind) -> None:
        super().__init__()
        if kind == "bottleneck":
            widths, kernels = [in_planes, mid, mid, planes], [1, 3, 1]
        else:
            widths, kernels = [in_planes, mid, planes], [3, 3]
        strides = [stride if k == 3 and i == kernels.index(3) else 1 for i, k in enumerate(kernels)]
        self.norms = nn.ModuleList(nn.BatchNorm2d(width) for width in widths[:-1])
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], k, strides[i], k // 2, bias=False)
                                   for i, k in enumerate(kernels))
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = out = F.relu(self.norms[0](x))
        for index, conv in enumerate(self.convs):
            out = conv(out if index == 0 else F.relu(self.norms[index](out)))
        # the projection shortcut sees the pre-activated input, as in the pre-activation ResNets
        return out + (x if self.shortcut is None else self.shortcut(pre))


class DenseFollowerResNet(ClassifierNetwork):
    """A pre-activation ResNet whose stages follow a DenseNet-BC's dense blocks (see the module's description).

    Args:
        densenet_depth: Depth of the DenseNet-BC followed (``6n + 4``).
        densenet_growth_rate: Its growth rate.
        densenet_compression: Its transitions' compression.
        blocks_per_stage: Residual blocks replacing each dense block.
        ratio: Width inside a block, as a ratio of the dense block's input channels.
        block: ``"bottleneck"`` (Pre-ResNet) or ``"wide"`` (Wide-ResNet).
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> from lightning_kd.models import DenseNet
        >>> teacher = DenseNet(depth=10, growth_rate=4, num_classes=10)
        >>> student = DenseFollowerResNet(10, 4, ratio=0.5, num_classes=10)
        >>> student.stem.weight.shape == teacher.stem.weight.shape, student.fc.weight.shape == teacher.fc.weight.shape
        (True, True)
        >>> student(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    he_init = True

    def __init__(
        self,
        densenet_depth: int = 88,
        densenet_growth_rate: int = 60,
        densenet_compression: float = 0.5,
        blocks_per_stage: int = 1,
        ratio: float = 0.5,
        block: BlockKind = "bottleneck",
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise Refusal(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if not ratio > 0:
            raise Refusal(f"ratio must be > 0, got {ratio}")
        if block not in ("bottleneck", "wide"):
            raise Refusal(f"block must be 'bottleneck' or 'wide', got {block!r}")
        channels = dense_block_channels(densenet_depth, densenet_growth_rate, densenet_compression)
        planes = channels[0][0]
        self.stem = nn.Conv2d(in_channels, planes, 3, 1, 1, bias=False)
        stages = []
        for index, (block_in, block_out) in enumerate(channels):
            mid = max(1, round(ratio * block_in))
            stages.append(nn.Sequential(*[
                PreActBlock(planes if b == 0 else block_out, mid, block_out, 2 if index and b == 0 else 1, block)
                for b in range(blocks_per_stage)
            ]))
            planes = block_out
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.num_classes = num_classes
        self.num_features = planes
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"stages.{i}" for i in range(len(self.stages)))

    @property
    def preact_stage_names(self) -> tuple[str, ...]:
        # pre-activation blocks: a stage's output meets its BatchNorm in the next stage's first block
        return (*(f"stages.{i}.0.norms.0" for i in range(1, len(self.stages))), "bn")

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stages(self.stem(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


@register_model(network=DenseFollowerResNet, block="bottleneck", ratio=0.5)
def ban_preresnet_14_0_5(num_classes: int = 100, in_channels: int = 3) -> DenseFollowerResNet:
    """The Born-Again paper's BAN-Pre-ResNet-14-0.5 of DenseNet-90-60, as this package reads it (6.6M; paper 7.3M)."""
    return DenseFollowerResNet(block="bottleneck", ratio=0.5, num_classes=num_classes, in_channels=in_channels)


@register_model(network=DenseFollowerResNet, block="wide", ratio=0.5)
def ban_wrn_4_0_5(num_classes: int = 100, in_channels: int = 3) -> DenseFollowerResNet:
    """The Born-Again paper's BAN-Wide-ResNet-4-0.5 of DenseNet-90-60, as this package reads it (17.4M; paper
    24.3M)."""
    return DenseFollowerResNet(block="wide", ratio=0.5, num_classes=num_classes, in_channels=in_channels)
