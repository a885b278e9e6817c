"""GhostNet (version 1).

Reference: Han et al., "GhostNet: More Features from Cheap Operations" (CVPR 2020), Table 7.
As in the authors' code, channel counts are scaled by ``width`` and rounded to multiples of 4,
squeeze-excite bottlenecks are a quarter of the channels rounded to a multiple of 4, with
ReLU and a hard-sigmoid gate.

The dense backbone ends at the last Ghost bottleneck (160 channels at width 1.0). The 1x1
convolution to 960 channels that follows it, the pooled 1x1 convolution to 1280 and the
linear classifier form the classifier head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ubiq.models.toolchain.backbones.common import (
    Backbone,
    Classifier,
    ConvBNAct,
    PooledLinearHead,
    SqueezeExcite,
    backbone_from_layers,
    initialize_weights,
    make_divisible,
)

# Kernel, expanded channels, output channels, squeeze-excite, stride (Table 7).
_BLOCKS = (
    (3, 16, 16, False, 1),
    (3, 48, 24, False, 2),
    (3, 72, 24, False, 1),
    (5, 72, 40, True, 2),
    (5, 120, 40, True, 1),
    (3, 240, 80, False, 2),
    (3, 200, 80, False, 1),
    (3, 184, 80, False, 1),
    (3, 184, 80, False, 1),
    (3, 480, 112, True, 1),
    (3, 672, 112, True, 1),
    (5, 672, 160, True, 2),
    (5, 960, 160, False, 1),
    (5, 960, 160, True, 1),
    (5, 960, 160, False, 1),
    (5, 960, 160, True, 1),
)
_DIVISOR = 4


class GhostModule(nn.Module):
    """A Ghost module: a 1x1 convolution makes half the channels, a cheap depthwise 3x3
    convolution makes the other half from them.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        use_activation: Apply ReLU after both convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, use_activation: bool = True) -> None:
        super().__init__()
        activation_name = "relu" if use_activation else None
        primary_channels = math.ceil(out_channels / 2)
        self.out_channels = out_channels
        self.trim = 2 * primary_channels != out_channels
        self.primary = ConvBNAct(in_channels, primary_channels, 1, activation_name=activation_name)
        self.cheap = ConvBNAct(
            primary_channels, primary_channels, 3, 1, primary_channels, activation_name
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (N, in_channels, H, W) to (N, out_channels, H, W)."""
        primary = self.primary(x)
        out = torch.cat((primary, self.cheap(primary)), dim=1)
        if self.trim:
            out = out[:, : self.out_channels]
        return out


class GhostBottleneck(nn.Module):
    """A Ghost bottleneck: Ghost module, (stride-2 depthwise), (squeeze-excite), Ghost module,
    plus a shortcut (identity, or depthwise + 1x1 when the shape changes).

    Args:
        in_channels: Input channels.
        expanded_channels: Channels after the first Ghost module.
        out_channels: Output channels.
        kernel_size: Kernel of the stride-2 depthwise convolutions.
        stride: 1 or 2.
        use_se: Add a squeeze-excite after the depthwise stage.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        use_se: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [GhostModule(in_channels, expanded_channels)]
        if stride > 1:
            layers.append(
                ConvBNAct(
                    expanded_channels,
                    expanded_channels,
                    kernel_size,
                    stride,
                    expanded_channels,
                    None,
                )
            )
        if use_se:
            squeeze = make_divisible(expanded_channels * 0.25, _DIVISOR)
            layers.append(SqueezeExcite(expanded_channels, squeeze, "relu", "hardsigmoid"))
        layers.append(GhostModule(expanded_channels, out_channels, use_activation=False))
        self.block = nn.Sequential(*layers)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvBNAct(in_channels, in_channels, kernel_size, stride, in_channels, None),
                ConvBNAct(in_channels, out_channels, 1, activation_name=None),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (N, in_channels, H, W) to (N, out_channels, H / stride, W / stride)."""
        return self.block(x) + self.shortcut(x)


def ghostnet(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the GhostNet backbone.

    Args:
        width: Channel multiplier (channels rounded to multiples of 4).
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (40, 112, 160) at width 1.0.
    """
    channels = make_divisible(16 * width, _DIVISOR)
    layers: list[tuple[nn.Module, int, int]] = [
        (ConvBNAct(in_channels, channels, 3, 2), 2, channels)
    ]
    for kernel, expanded, out_channels, use_se, stride in _BLOCKS:
        expanded = make_divisible(expanded * width, _DIVISOR)
        out_channels = make_divisible(out_channels * width, _DIVISOR)
        block = GhostBottleneck(channels, expanded, out_channels, kernel, stride, use_se)
        layers.append((block, stride, out_channels))
        channels = out_channels
    backbone = backbone_from_layers(layers)
    initialize_weights(backbone)
    return backbone


def ghostnet_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds GhostNet for classification: 1x1 conv to 960, pool, 1x1 conv to 1280, linear.

    Args:
        num_classes: Output logits.
        width: Channel multiplier (the 1280 hidden layer is not scaled).
        in_channels: Image channels.
        dropout: Dropout before the linear layer.

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    backbone = ghostnet(width, in_channels)
    head = PooledLinearHead(
        backbone.out_channels[2],
        num_classes,
        conv_channels=make_divisible(960 * width, _DIVISOR),
        conv_activation="relu",
        hidden_features=1280,
        hidden_activation="relu",
        hidden_as_conv=True,
        dropout=dropout,
    )
    initialize_weights(head)
    return Classifier(backbone, head)
