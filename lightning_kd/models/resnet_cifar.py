"""CIFAR ResNets (He et al. 2016, section 4.2), the wide ResNet8x4/32x4 of the KD benchmarks, ResNet-18.

ResNet-20/32/56/110 use three stages of 16/32/64 channels with ``(depth - 2) / 6`` basic blocks
each. ResNet8x4 and ResNet32x4 (Tian et al., CRD) widen the stem and stages to 32/64/128/256.
``resnet18_cifar`` is the ResNet-18 the CIFAR KD papers (Tf-KD among them) train: four stages of
64/128/256/512 channels with two basic blocks each, a 3x3 stem and no max-pooling; ``resnet50_cifar`` the
benchmarks' ResNet-50 the same way with bottleneck blocks (3/4/6/3, 23.7M parameters with 100 classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.errors import Refusal
from lightning_kd.models.base import ClassifierNetwork, init_weights
from lightning_kd.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.preact = nn.Identity()  # names the sum before the last ReLU, a tap for pre-activation methods

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.preact(out + self.shortcut(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand to 4x ``planes``; a projected shortcut where shapes change."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_planes))
        self.preact = nn.Identity()  # names the sum before the last ReLU

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.preact(self.bn3(self.conv3(out)) + self.shortcut(x)))


class CifarResNet(ClassifierNetwork):
    """ResNet for 32x32 inputs with basic blocks.

    Args:
        depth: ``6n + 2`` (8, 20, 32, 56, 110, ...): ``n = (depth - 2) / 6`` blocks in every stage (default 20),
            counted as for three stages whatever their number; ``9n + 2`` with bottlenecks.
        widths: Stem width followed by one width per stage.
        blocks: Blocks per stage instead of ``depth`` (e.g. ``[2, 2, 2, 2]`` for ResNet-18); one per stage.
        bottleneck: Bottleneck blocks (1x1, 3x3, 1x1; a stage's output is 4x its width) rather than basic ones,
            as ResNet-50 has.
        num_classes: Number of classes (linked from the data module by the CLI).
        in_channels: Input channels (linked from the data module by the CLI).

    Example:
        >>> import torch
        >>> net = CifarResNet(depth=20, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    he_init = True

    def __init__(
        self,
        depth: int | None = None,
        widths: Sequence[int] = (16, 16, 32, 64),
        num_classes: int = 100,
        in_channels: int = 3,
        blocks: Sequence[int] | None = None,
        bottleneck: bool = False,
    ) -> None:
        super().__init__()
        layers = 3 if bottleneck else 2
        if len(widths) < 2:
            raise Refusal(f"widths needs a stem width and at least one stage width, got {list(widths)}")
        if blocks is None:
            depth = 20 if depth is None else depth
            # depth counts as for three stages (the CIFAR ResNets' naming), whatever their number: n blocks in each
            unit = 3 * layers
            if (depth - 2) % unit or depth < unit + 2:
                kind = "bottleneck" if bottleneck else "basic"
                raise Refusal(f"CifarResNet depth must be {unit}n + 2 with n >= 1 (n {kind} blocks in every stage), "
                              f"got {depth}")
            blocks = [(depth - 2) // unit] * (len(widths) - 1)
        elif depth is not None and depth != layers * sum(blocks) + 2:
            raise Refusal(f"CifarResNet: blocks {list(blocks)} make depth {layers * sum(blocks) + 2}, not {depth}; "
                             "give one of them")
        if len(blocks) != len(widths) - 1 or any(b < 1 for b in blocks):
            raise Refusal(f"CifarResNet: blocks needs one count >= 1 per stage ({len(widths) - 1} stages), "
                             f"got {list(blocks)}")
        self.num_classes = num_classes
        block = Bottleneck if bottleneck else BasicBlock
        self.num_features = widths[-1] * (Bottleneck.expansion if bottleneck else 1)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, (planes, count) in enumerate(zip(widths[1:], blocks, strict=True)):
            stride = 1 if index == 0 else 2
            out_planes = planes * (Bottleneck.expansion if bottleneck else 1)
            stages.append(nn.Sequential(*(block(in_planes if b == 0 else out_planes, planes, stride if b == 0 else 1)
                                          for b in range(count))))
            in_planes = out_planes
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"stages.{i}" for i in range(len(self.stages)))

    @property
    def preact_stage_names(self) -> tuple[str, ...]:
        return tuple(f"stages.{i}.{len(stage) - 1}.preact" for i, stage in enumerate(self.stages))

    @property
    def preact_batchnorm_names(self) -> tuple[str, ...]:
        """The BatchNorm of each stage's last residual branch (its sum with the shortcut is the pre-activation)."""
        last = "bn3" if isinstance(self.stages[0][0], Bottleneck) else "bn2"
        return tuple(f"stages.{i}.{len(stage) - 1}.{last}" for i, stage in enumerate(self.stages))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)



def _preset(name: str, depth: int, widths: tuple[int, ...]) -> None:
    def constructor(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_channels)

    constructor.__name__ = name
    constructor.__doc__ = f"{name}: CifarResNet(depth={depth}, widths={widths})."
    register_model(name, CifarResNet, depth=depth, widths=widths)(constructor)


for _depth in (20, 32, 44, 56, 110):
    _preset(f"resnet{_depth}", _depth, (16, 16, 32, 64))
_preset("resnet8x4", 8, (32, 64, 128, 256))
_preset("resnet32x4", 32, (32, 64, 128, 256))


@register_model(network=CifarResNet, depth=None, widths=(64, 64, 128, 256, 512), blocks=(2, 2, 2, 2))
def resnet18_cifar(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """resnet18_cifar: CifarResNet(widths=(64, 64, 128, 256, 512), blocks=(2, 2, 2, 2)), 11.2M parameters."""
    return CifarResNet(None, (64, 64, 128, 256, 512), num_classes, in_channels, blocks=(2, 2, 2, 2))


@register_model(network=CifarResNet, depth=None, widths=(64, 64, 128, 256, 512), blocks=(3, 4, 6, 3),
                bottleneck=True)
def resnet50_cifar(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-50 for CIFAR (the KD benchmarks' teacher): bottlenecks 3/4/6/3, a 3x3 stem, no max-pooling."""
    return CifarResNet(widths=(64, 64, 128, 256, 512), blocks=(3, 4, 6, 3), bottleneck=True, num_classes=num_classes,
                       in_channels=in_channels)


@register_model(network=CifarResNet, depth=None, widths=(64, 64, 128, 256, 512), blocks=(3, 4, 6, 3))
def resnet34_cifar(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """resnet34_cifar: CifarResNet(widths=(64, 64, 128, 256, 512), blocks=(3, 4, 6, 3)), 21.3M parameters."""
    return CifarResNet(None, (64, 64, 128, 256, 512), num_classes, in_channels, blocks=(3, 4, 6, 3))
