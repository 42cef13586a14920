"""MobileNetV2 in torchvision's module layout, for ImageNet and for digits.

Paths follow torchvision (``features.0.0`` stem conv, ``features.2.conv.0.0`` expand conv,
``features.2.conv.1.0`` depthwise conv, ``features.2.conv.2`` project conv,
``classifier.1``), so torchvision state_dicts load unchanged into :func:`mobilenetv2`.
"""

from __future__ import annotations

import torch
from torch import nn

# torchvision's inverted residual settings: (expand ratio t, channels c, repeats n, stride s).
IMAGENET_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
DIGITS_SETTINGS = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 1)]
# A narrow MobileNetV2 for 32x32 inputs: CIFAR practice keeps the stem at stride 1; two
# downsamplings (32 -> 16 -> 8) with torchvision's expand ratio 6.
DIGITS32_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 1), (6, 64, 3, 2), (6, 96, 2, 1)]


class ConvBNReLU6(nn.Sequential):
    """Conv (same padding, no bias) + BatchNorm + ReLU6: torchvision's Conv2dNormActivation."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel,
                stride,
                (kernel - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear project; residual add when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv, inverted residual stages, 1x1 head conv, global average pool, classifier."""

    def __init__(
        self,
        settings: list[tuple[int, int, int, int]],
        in_channels: int = 3,
        stem_channels: int = 32,
        stem_stride: int = 2,
        last_channels: int = 1280,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU6(in_channels, stem_channels, stride=stem_stride)]
        channels = stem_channels
        for expand, width, repeats, stride in settings:
            for index in range(repeats):
                features.append(
                    InvertedResidual(channels, width, stride if index == 0 else 1, expand)
                )
                channels = width
        features.append(ConvBNReLU6(channels, last_channels, kernel=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # Index 0 is where torchvision has Dropout(0.2); an Identity keeps the key
        # ``classifier.1`` without putting dropout into the graph.
        self.classifier = nn.Sequential(nn.Identity(), nn.Linear(last_channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2() -> MobileNetV2:
    """Standard MobileNetV2 (width 1.0) for 3x224x224 inputs (3,504,872 parameters)."""
    return MobileNetV2(IMAGENET_SETTINGS)


def digits_mobilenet() -> MobileNetV2:
    """Small MobileNetV2 for 1x8x8 digits: stride-1 stem, three stages, 64-channel head."""
    return MobileNetV2(
        DIGITS_SETTINGS,
        in_channels=1,
        stem_channels=16,
        stem_stride=1,
        last_channels=64,
        num_classes=10,
    )


def digits32_mobilenet() -> MobileNetV2:
    """Small MobileNetV2 for 1x32x32 digits: stride-1 stem, five stages, 512-channel head."""
    return MobileNetV2(
        DIGITS32_SETTINGS,
        in_channels=1,
        stem_channels=32,
        stem_stride=1,
        last_channels=512,
        num_classes=10,
    )
