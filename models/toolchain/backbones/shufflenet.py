"""ShuffleNetV2.

Reference: Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design" (2018). Widths 0.5, 1.0, 1.5 and 2.0 use the paper's channel tables (Table 5); any
other width scales the 1.0 table and rounds each stage to a multiple of 8 (so the channel
split stays even), with the 1024-channel ``conv5`` doubled above width 1.5 as the paper does
for 2.0.

The dense backbone ends at stage 4 (464 channels at width 1.0); ``conv5`` (464->1024) only
serves classification and is part of the classifier head.
"""

from __future__ import annotations

import torch
from torch import nn

from ubiq.models.toolchain.backbones.common import (
    Backbone,
    Classifier,
    ConvBNAct,
    PooledLinearHead,
    backbone_from_layers,
    initialize_weights,
    make_divisible,
)

_STAGE_REPEATS = (4, 8, 4)
# width -> (stage 2, stage 3, stage 4, conv5) output channels; the stem is always 24.
_STAGE_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
_STEM_CHANNELS = 24


def stage_channels(width: float) -> tuple[int, int, int, int]:
    """Returns the (stage 2, stage 3, stage 4, conv5) channels of ShuffleNetV2 at ``width``.

    Args:
        width: Channel multiplier.

    Returns:
        The paper's table for 0.5, 1.0, 1.5 and 2.0; the scaled 1.0 table otherwise.
    """
    for table_width, channels in _STAGE_CHANNELS.items():
        if abs(width - table_width) < 1e-9:
            return channels
    stage2, stage3, stage4, _ = _STAGE_CHANNELS[1.0]
    scaled = tuple(make_divisible(channels * width) for channels in (stage2, stage3, stage4))
    return (*scaled, 2048 if width > 1.5 else 1024)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleaves the channels of ``x`` (N, C, H, W) across ``groups`` groups."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width)
    return x.transpose(1, 2).reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """The ShuffleNetV2 unit (Fig. 3c with stride 1, Fig. 3d with stride 2).

    With stride 1 the input is split in two halves: one passes through, the other goes
    through 1x1, depthwise 3x3, 1x1. With stride 2 both branches see the whole input and
    downsample. The two halves are concatenated and channel-shuffled.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (even).
        stride: 1 or 2.

    Raises:
        ValueError: If ``out_channels`` is odd, or the stride is 1 and the channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 unit keeps its channels, got {in_channels} -> {out_channels}"
            )
        branch_channels = out_channels // 2
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Sequential(
                ConvBNAct(in_channels, in_channels, 3, stride, in_channels, None),
                ConvBNAct(in_channels, branch_channels, 1),
            )
        else:
            self.shortcut = nn.Identity()
        branch_in = in_channels if stride > 1 else branch_channels
        self.branch = nn.Sequential(
            ConvBNAct(branch_in, branch_channels, 1),
            ConvBNAct(branch_channels, branch_channels, 3, stride, branch_channels, None),
            ConvBNAct(branch_channels, branch_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (N, in_channels, H, W) to (N, out_channels, H / stride, W / stride)."""
        if self.stride == 1:
            passed, processed = x.chunk(2, dim=1)
            out = torch.cat((passed, self.branch(processed)), dim=1)
        else:
            out = torch.cat((self.shortcut(x), self.branch(x)), dim=1)
        return channel_shuffle(out, 2)


def shufflenet_v2(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the ShuffleNetV2 backbone.

    Args:
        width: Channel multiplier (see :func:`stage_channels`).
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (116, 232, 464) at width 1.0.
    """
    layers: list[tuple[nn.Module, int, int]] = [
        (ConvBNAct(in_channels, _STEM_CHANNELS, 3, 2), 2, _STEM_CHANNELS),
        (nn.MaxPool2d(3, 2, 1), 2, _STEM_CHANNELS),
    ]
    channels = _STEM_CHANNELS
    for repeats, out_channels in zip(_STAGE_REPEATS, stage_channels(width)[:3]):
        for index in range(repeats):
            stride = 2 if index == 0 else 1
            layers.append((ShuffleUnit(channels, out_channels, stride), stride, out_channels))
            channels = out_channels
    backbone = backbone_from_layers(layers)
    initialize_weights(backbone)
    return backbone


def shufflenet_v2_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds ShuffleNetV2 for classification: backbone, ``conv5`` 1x1, pool, linear.

    Args:
        num_classes: Output logits.
        width: Channel multiplier.
        in_channels: Image channels.
        dropout: Dropout before the linear layer (the paper uses none; 0.0 turns it off).

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    backbone = shufflenet_v2(width, in_channels)
    head = PooledLinearHead(
        backbone.out_channels[2],
        num_classes,
        conv_channels=stage_channels(width)[3],
        conv_activation="relu",
        dropout=dropout,
    )
    initialize_weights(head)
    return Classifier(backbone, head)
