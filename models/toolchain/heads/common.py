"""Small building blocks shared by the necks and heads: quantization-friendly conv units."""

from __future__ import annotations

from torch import nn

__all__ = ["ConvBNAct", "DepthwiseSeparable"]


class ConvBNAct(nn.Sequential):
    """Conv2d, BatchNorm and ReLU6 (or no activation): the unit every int8 runtime fuses.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; padding keeps the size at stride 1.
        stride: Convolution stride.
        groups: Convolution groups (``in_channels`` for depthwise).
        activation: Whether to end with ReLU6.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparable(nn.Sequential):
    """A depthwise 3x3 (or ``kernel_size``) unit followed by a pointwise 1x1 unit."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, kernel_size, groups=in_channels),
            ConvBNAct(in_channels, out_channels, 1),
        )
