"""CIFAR VGG with BatchNorm (Simonyan & Zisserman 2015), as the KD benchmarks (CRD's RepDistiller, mdistiller) train it.

Five blocks of 3x3 convolutions (each with BatchNorm and ReLU), max-pooled after the first three; for 32x32 inputs
the last two blocks work at 4x4 (a fourth pool only for 64x64 inputs, as there), then a global average and one
linear layer on 512 features. VGG-8/11/13/16/19 differ in the convolutions per block: 1/1/1/1/1, 1/1/2/2/2,
2/2/2/2/2, 2/2/3/3/3 and 2/2/4/4/4 (configs S, A, B, D, E). The stages are blocks 1 to 4 (block 0 plays the stem's
part, as in the benchmarks' feature lists), each ending with its ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model

VGG_BLOCKS: dict[int, tuple[int, ...]] = {8: (1, 1, 1, 1, 1), 11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2),
                                          16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
"""Convolutions per block of each depth."""

VGG_WIDTHS = (64, 128, 256, 512, 512)


def _block(in_channels: int, width: int, convolutions: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(convolutions):
        layers += [nn.Conv2d(in_channels if index == 0 else width, width, 3, padding=1), nn.BatchNorm2d(width),
                   nn.ReLU()]
    return nn.Sequential(*layers)


class CifarVGG(ClassifierNetwork):
    """VGG with BatchNorm for small images.

    Args:
        depth: 8, 11, 13, 16 or 19 (default 13).
        widths: The five blocks' widths (default 64, 128, 256, 512, 512).
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = CifarVGG(depth=8, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape, net.stage_names
        (torch.Size([2, 10]), ('block1', 'block2', 'block3', 'block4'))
    """

    he_init = True

    stem_name = "block0"
    """The layers before the first stage (``"stem"`` taps them)."""

    def __init__(self, depth: int = 13, widths: Sequence[int] = VGG_WIDTHS, num_classes: int = 100,
                 in_channels: int = 3) -> None:
        super().__init__()
        if depth not in VGG_BLOCKS:
            raise Refusal(f"CifarVGG depth must be one of {', '.join(map(str, VGG_BLOCKS))}, got {depth}")
        if len(widths) != 5:
            raise Refusal(f"CifarVGG takes five block widths, got {list(widths)}")
        self.num_classes, self.num_features = num_classes, widths[-1]
        channels = [in_channels, *widths]
        for index, convolutions in enumerate(VGG_BLOCKS[depth]):
            self.add_module(f"block{index}", _block(channels[index], channels[index + 1], convolutions))
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return ("block1", "block2", "block3", "block4")

    @property
    def preact_stage_names(self) -> tuple[str, ...]:
        # each block ends convolution, BatchNorm, ReLU: the BatchNorm's output
        return tuple(f"{name}.{len(getattr(self, name)) - 2}" for name in self.stage_names)

    @property
    def preact_batchnorm_names(self) -> tuple[str, ...]:
        """The BatchNorms whose outputs are the pre-activation stages (their affine parameters describe them)."""
        return self.preact_stage_names

    def forward_features(self, x: Tensor) -> Tensor:
        large = x.shape[-1] >= 64  # the benchmarks pool after block 3 only for 64x64 inputs
        x = F.max_pool2d(self.block0(x), 2)
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.block3(x)
        x = self.block4(F.max_pool2d(x, 2) if large else x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _preset(depth: int) -> None:
    def constructor(num_classes: int = 100, in_channels: int = 3) -> CifarVGG:
        return CifarVGG(depth, num_classes=num_classes, in_channels=in_channels)

    constructor.__doc__ = f"VGG-{depth} with BatchNorm for CIFAR."
    register_model(f"vgg{depth}", CifarVGG, depth=depth)(constructor)


for _depth in VGG_BLOCKS:
    _preset(_depth)
