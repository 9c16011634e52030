"""Reference CNN factories for 28x28 single-channel classification (animal-mnist, MNIST-like data).

Every factory returns a plain :class:`torch.nn.Module` whose ``forward`` takes one tensor named ``x``
of shape ``(N, in_channels, 28, 28)`` and returns logits of shape ``(N, num_classes)``. All arguments
have defaults, so each factory can be used as a ``module:callable`` model factory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import torch
from torch import nn

__all__ = [
    "FACTORIES",
    "BasicBlock",
    "CompactCNN",
    "DepthwiseSeparable",
    "ResNet",
    "TinyCNN",
    "compact_cnn",
    "kws_resnet",
    "resnet18_style",
    "small_resnet",
    "tiny_cnn",
    "wide_resnet",
]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BatchNorm, with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for small images: 3x3 stem (no max-pool), stages of basic blocks, global average pool, linear.

    The first stage keeps the resolution; every later stage halves it with a stride-2 first block.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks_per_stage: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks_per_stage) or not widths:
            raise ValueError("widths and blocks_per_stage must be non-empty and of the same length")
        if num_classes < 1 or in_channels < 1 or min(widths) < 1 or min(blocks_per_stage) < 1:
            raise ValueError("num_classes, in_channels, widths and blocks_per_stage must be positive")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch so every block starts as the identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for a batch ``x`` of shape ``(N, C, H, W)``."""
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class TinyCNN(nn.Module):
    """A very small CNN (about 6k parameters): three conv layers, two max-pools, global average pool."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for a batch ``x`` of shape ``(N, C, H, W)``."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class DepthwiseSeparable(nn.Module):
    """MobileNet-style block: 3x3 depthwise conv + BatchNorm + ReLU, then 1x1 pointwise conv + BatchNorm
    + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class CompactCNN(nn.Module):
    """A compact CNN of depthwise-separable blocks (MobileNet-v1 style) for 28x28 inputs.

    3x3 stem at ``width`` channels, then six depthwise-separable blocks widening to ``16 * width``,
    resolution 28 -> 14 -> 7 -> 4, global average pool, linear (about 0.27M parameters at width 32).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or width < 1:
            raise ValueError("num_classes, in_channels and width must be positive")
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        plan = [(w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1), (4 * w, 8 * w, 2), (8 * w, 8 * w, 1)]
        plan.append((8 * w, 16 * w, 2))
        self.blocks = nn.Sequential(*(DepthwiseSeparable(i, o, s) for i, o, s in plan))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for a batch ``x`` of shape ``(N, C, H, W)``."""
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def small_resnet(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """A small ResNet for 28x28 inputs: stem, 3 stages of one basic block (width, 2*width, 4*width).

    Resolution 28 -> 14 -> 7, then global average pool and a linear classifier (about 75k parameters at
    ``width=16``).
    """
    return ResNet((width, 2 * width, 4 * width), (1, 1, 1), num_classes=num_classes, in_channels=in_channels)


def wide_resnet(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """``small_resnet`` at width 48 (about 0.7M parameters): compute-bound enough that int8 pays off
    by a wide margin on a CPU, which the pipeline tests rely on to check promotion."""
    return small_resnet(num_classes=num_classes, in_channels=in_channels, width=48)


def resnet18_style(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A ResNet-18-style CNN adapted to 28x28 inputs: 3x3 stem, no max-pool, 4 stages of 2 basic blocks.

    Widths 64-128-256-512, resolution 28 -> 14 -> 7 -> 4; about 11.2M parameters.
    """
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A very small CNN (about 6k parameters) for fast tests."""
    return TinyCNN(num_classes=num_classes, in_channels=in_channels)


def compact_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A compact depthwise-separable CNN (about 0.27M parameters, about 15M MACs per 28x28 image)."""
    return CompactCNN(num_classes=num_classes, in_channels=in_channels)


def kws_resnet(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A keyword-spotting ResNet over MFCC "images" (``[N, 1, 13, 40]``: coefficients x frames, the
    spoken-digits dataset): widths 64-128-256, one basic block each, resolution 13x40 -> 7x20 -> 4x10;
    about 1.2M parameters and 0.1G MACs, as the residual KWS networks of Tang and Lin (2018) are, sized
    for a device that can afford them before compression."""
    return ResNet((64, 128, 256), (1, 1, 1), num_classes=num_classes, in_channels=in_channels)


FACTORIES: Final[dict[str, Callable[..., nn.Module]]] = {
    "small_resnet": small_resnet,
    "resnet18_style": resnet18_style,
    "tiny_cnn": tiny_cnn,
    "wide_resnet": wide_resnet,
    "compact_cnn": compact_cnn,
    "kws_resnet": kws_resnet,
}
