"""CIFAR MobileNetV2 (Sandler et al. 2018), the KD benchmarks' student (CRD's RepDistiller, mdistiller).

A 3x3 stem of stride 2, seven groups of inverted residual blocks (expand 1x1, depthwise 3x3, project 1x1 without
ReLU; a residual where the shape allows) with ImageNet's channels and strides ``(t, c, n, s)``: (1, 16, 1, 1),
(T, 24, 2, 1), (T, 32, 3, 2), (T, 64, 4, 2), (T, 96, 3, 1), (T, 160, 3, 2), (T, 320, 1, 1), a 1x1 convolution to
1280 channels, a global average and one linear layer. The benchmarks' ``mobilenetv2`` is their ``mobile_half``:
``T = 6``, the channels halved (``width 0.5``; the 1280 kept). As there, the first group's block also has its
(1x expansion) 1x1 convolution. The stages are the ends of groups 1, 2, 4 and 6 (the benchmarks' feature list).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model

GROUPS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1), (None, 160, 3, 2),
          (None, 320, 1, 1))
"""``(expansion, channels, blocks, stride)`` of each group; ``None``: the network's expansion ``T``."""


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels), *([nn.ReLU()] if relu else [])]


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(*_conv_bn(in_channels, hidden, 1), *_conv_bn(hidden, hidden, 3, stride, hidden),
                                  *_conv_bn(hidden, out_channels, 1, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class CifarMobileNetV2(ClassifierNetwork):
    """MobileNetV2 for 32x32 inputs.

    Args:
        expansion: The blocks' expansion ``T`` (default 6).
        width: Multiplier of every group's channels and the stem's (default 0.5, the benchmarks' student); the
            last 1x1 convolution has 1280 channels, ``1280 * width`` above 1.
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = CifarMobileNetV2(num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape, net.stage_names
        (torch.Size([2, 10]), ('groups.1', 'groups.2', 'groups.4', 'groups.6'))
    """

    he_init = True

    def __init__(self, expansion: int = 6, width: float = 0.5, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if expansion < 1 or not width > 0:
            raise Refusal(f"CifarMobileNetV2 needs expansion >= 1 and width > 0, got {expansion} and {width}")
        channels = int(32 * width)
        self.stem = nn.Sequential(*_conv_bn(in_channels, channels, 3, stride=2))
        groups: list[nn.Module] = []
        for t, c, n, s in GROUPS:
            out_channels, blocks = int(c * width), []
            for index in range(n):
                blocks.append(InvertedResidual(channels, out_channels, s if index == 0 else 1, t or expansion))
                channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.num_classes, self.num_features = num_classes, int(1280 * width) if width > 1 else 1280
        self.head_conv = nn.Sequential(*_conv_bn(channels, self.num_features, 1))
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return ("groups.1", "groups.2", "groups.4", "groups.6")

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.head_conv(self.groups(self.stem(x))), 1).flatten(1)


@register_model(network=CifarMobileNetV2, expansion=6, width=0.5)
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> CifarMobileNetV2:
    """The KD benchmarks' CIFAR MobileNetV2 (``mobile_half``: expansion 6, width 0.5)."""
    return CifarMobileNetV2(6, 0.5, num_classes=num_classes, in_channels=in_channels)
