"""ResNet with BasicBlocks in torchvision's module layout, for ImageNet and for digits.

Module paths (``conv1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``) match
torchvision so node names in graphs, strategies and records read like the familiar model,
and torchvision state_dicts load unchanged into :func:`resnet18`.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity or 1x1 conv+BN (``downsample``) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, four-or-fewer stages of BasicBlocks, global average pool, linear classifier.

    ``stem_kernel``/``stem_stride``/``stem_maxpool`` let the same class serve 224x224 inputs
    (7x7 stride-2 conv plus max pool) and tiny 8x8 inputs (3x3 stride-1 conv, no pool).
    ``stages`` lists (width, number of blocks, stride of the first block) per stage.
    """

    def __init__(
        self,
        stages: list[tuple[int, int, int]],
        in_channels: int = 3,
        stem_channels: int = 64,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_maxpool: bool = True,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, stem_channels, stem_kernel, stem_stride, stem_kernel // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, padding=1) if stem_maxpool else None
        channels = stem_channels
        for index, (width, blocks, stride) in enumerate(stages, start=1):
            layer = []
            for block in range(blocks):
                layer.append(BasicBlock(channels, width, stride if block == 0 else 1))
                channels = width
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> ResNet:
    """Standard ResNet-18 for 3x224x224 inputs and 1000 classes (11,689,512 parameters)."""
    return ResNet([(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)])


def digits_resnet() -> ResNet:
    """Small ResNet for 1x8x8 digits; ``layer2.0`` changes 16->32 channels via ``downsample``."""
    return ResNet(
        [(16, 1, 1), (32, 2, 2)],
        in_channels=1,
        stem_channels=16,
        stem_kernel=3,
        stem_stride=1,
        stem_maxpool=False,
        num_classes=10,
    )


def cifar_resnet20(width: int = 16, in_channels: int = 1, num_classes: int = 10) -> ResNet:
    """CIFAR-style ResNet-20 (He et al. 2016, section 4.2) for 32x32 inputs.

    Three stages of three BasicBlocks at ``width``, 2x and 4x channels on 32x32, 16x16 and
    8x8 maps (19 convolutions plus the classifier); the shortcuts that change shape are
    1x1 conv+BN (option B) so every layer is a plain Conv the tools can prune and quantize.
    The paper's width is 16.
    """
    return ResNet(
        [(width, 3, 1), (2 * width, 3, 2), (4 * width, 3, 2)],
        in_channels=in_channels,
        stem_channels=width,
        stem_kernel=3,
        stem_stride=1,
        stem_maxpool=False,
        num_classes=num_classes,
    )
