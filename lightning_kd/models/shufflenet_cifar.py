"""CIFAR ShuffleNetV1 (Zhang et al. 2018) and ShuffleNetV2 (Ma et al. 2018), the KD benchmarks' students.

As CRD's RepDistiller and mdistiller build them for 32x32 inputs: a 1x1 stem to 24 channels (no stride, no max
pool), three stages that each halve the resolution, a global average and one linear layer.

* **V1** (``shufflenetv1``: 240/480/960 channels, 4/8/4 blocks, 3 groups): bottlenecks of a grouped 1x1 (ungrouped
  from the 24-channel stem), a channel shuffle, a depthwise 3x3 and a grouped 1x1, a quarter of the width inside;
  each stage's first block has stride 2 and concatenates a 3x3 average-pooled shortcut, the others add it.
* **V2** (``shufflenetv2``, size 1: 116/232/464 channels, 3/7/3 blocks and a 1x1 to 1024): each stage a
  downsampling unit (two branches of stride 2, concatenated) and then units that split the channels in half,
  transform one half (1x1, depthwise 3x3, 1x1) and concatenate, each followed by a shuffle of two groups. As in
  the benchmarks, a stage has one unit more than its count (the downsampling one).

The stages are the three stages' outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups: ``(B, g * c, H, W)`` read as ``(B, c, g, H, W)``.

    Example:
        >>> channel_shuffle(torch.arange(6.0).view(1, 6, 1, 1), 2).flatten().tolist()
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """
    batch, channels, height, width = x.shape
    return x.view(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(batch, channels, height,
                                                                                             width)


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels))


class ShuffleV1Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_channels // 4
        self.stride, self.first_groups = stride, first_groups
        self.reduce = _conv_bn(in_channels, mid, 1, groups=first_groups)
        self.depthwise = _conv_bn(mid, mid, 3, stride, groups=mid)
        self.expand = _conv_bn(mid, out_channels, 1, groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.reduce(x)), self.first_groups)
        out = self.expand(F.relu(self.depthwise(out)))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class CifarShuffleNetV1(ClassifierNetwork):
    """ShuffleNetV1 for 32x32 inputs.

    Args:
        widths: The three stages' output channels (default 240, 480, 960: 3 groups).
        blocks: Blocks per stage (default 4, 8, 4).
        groups: Groups of the 1x1 convolutions (default 3).
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> net = CifarShuffleNetV1(num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape, net.stage_names
        (torch.Size([2, 10]), ('stages.0', 'stages.1', 'stages.2'))
    """

    he_init = True

    def __init__(self, widths: tuple[int, ...] = (240, 480, 960), blocks: tuple[int, ...] = (4, 8, 4),
                 groups: int = 3, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if len(widths) != len(blocks) or any(w % (4 * groups) for w in widths) or min(blocks) < 1:
            raise Refusal(f"CifarShuffleNetV1 needs one block count >= 1 per stage and widths divisible by 4 x groups "
                          f"({4 * groups}), got widths {list(widths)} and blocks {list(blocks)}")
        self.stem = nn.Sequential(*_conv_bn(in_channels, 24, 1), nn.ReLU())
        channels, stages = 24, []
        for width, count in zip(widths, blocks, strict=True):
            units = []
            for index in range(count):
                out = width - channels if index == 0 else width  # the first concatenates its shortcut
                units.append(ShuffleV1Block(channels, out, 2 if index == 0 else 1, groups,
                                            1 if channels == 24 else groups))
                channels = width
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"stages.{i}" for i in range(len(self.stages)))

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


class ShuffleV2Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.left = nn.Sequential(_conv_bn(in_channels, in_channels, 3, 2, groups=in_channels),
                                  _conv_bn(in_channels, mid, 1), nn.ReLU())
        self.right = nn.Sequential(_conv_bn(in_channels, mid, 1), nn.ReLU(), _conv_bn(mid, mid, 3, 2, groups=mid),
                                   _conv_bn(mid, mid, 1), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleV2Unit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(_conv_bn(half, half, 1), nn.ReLU(), _conv_bn(half, half, 3, groups=half),
                                    _conv_bn(half, half, 1), nn.ReLU())
        self.preact = nn.Identity()  # names the unit before its last ReLU (the benchmarks' preact: not shuffled)

    def forward(self, x: Tensor) -> Tensor:
        kept, changed = x.chunk(2, dim=1)
        # the kept half comes out of a ReLU already: one ReLU over both halves is the branch's own, exactly
        preact = self.preact(torch.cat([kept, self.branch[:-1](changed)], 1))
        return channel_shuffle(self.branch[-1](preact), 2)


class CifarShuffleNetV2(ClassifierNetwork):
    """ShuffleNetV2 for 32x32 inputs.

    Args:
        widths: The three stages' channels and the last 1x1 convolution's (default 116, 232, 464, 1024: size 1).
        blocks: Units per stage after its downsampling unit (default 3, 7, 3).
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> net = CifarShuffleNetV2(num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape, net.num_features
        (torch.Size([2, 10]), 1024)
    """

    he_init = True

    def __init__(self, widths: tuple[int, ...] = (116, 232, 464, 1024), blocks: tuple[int, ...] = (3, 7, 3),
                 num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if len(widths) != len(blocks) + 1 or any(w % 2 for w in widths[:-1]) or min(blocks) < 0:
            raise Refusal(f"CifarShuffleNetV2 needs an even width per stage, then the last convolution's, and a "
                          f"count >= 0 per stage; got widths {list(widths)} and blocks {list(blocks)}")
        self.stem = nn.Sequential(*_conv_bn(in_channels, 24, 1), nn.ReLU())
        channels, stages = 24, []
        for width, count in zip(widths[:-1], blocks, strict=True):
            stages.append(nn.Sequential(ShuffleV2Down(channels, width), *(ShuffleV2Unit(width) for _ in range(count))))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head_conv = nn.Sequential(*_conv_bn(channels, widths[-1], 1), nn.ReLU())
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"stages.{i}" for i in range(len(self.stages)))

    @property
    def preact_stage_names(self) -> tuple[str, ...]:
        """Each stage's last unit before its ReLU: the kept half and the transformed one, before the shuffle."""
        if any(not isinstance(stage[-1], ShuffleV2Unit) for stage in self.stages):
            raise Refusal("CifarShuffleNetV2 names its stages before their last ReLU only when every stage ends with "
                          "a unit after its downsampling one (blocks >= 1)")
        return tuple(f"stages.{i}.{len(stage) - 1}.preact" for i, stage in enumerate(self.stages))

    @property
    def preact_batchnorm_names(self) -> tuple[str, ...]:
        """The BatchNorm of each stage's last unit's transformed half."""
        return tuple(name.replace(".preact", ".branch.3.1") for name in self.preact_stage_names)

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.head_conv(self.stages(self.stem(x))), 1).flatten(1)


@register_model(network=CifarShuffleNetV1)
def shufflenetv1(num_classes: int = 100, in_channels: int = 3) -> CifarShuffleNetV1:
    """The KD benchmarks' CIFAR ShuffleNetV1 (240/480/960 channels, 4/8/4 blocks, 3 groups)."""
    return CifarShuffleNetV1(num_classes=num_classes, in_channels=in_channels)


@register_model(network=CifarShuffleNetV2)
def shufflenetv2(num_classes: int = 100, in_channels: int = 3) -> CifarShuffleNetV2:
    """The KD benchmarks' CIFAR ShuffleNetV2 (size 1: 116/232/464 channels, 3/7/3 units, 1024 features)."""
    return CifarShuffleNetV2(num_classes=num_classes, in_channels=in_channels)
