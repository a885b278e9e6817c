"""A light feature pyramid: the neck between a backbone and a dense head (NanoDet style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ubiq.models.toolchain.heads.common import ConvBNAct, DepthwiseSeparable

__all__ = ["LiteFPN"]


class LiteFPN(nn.Module):
    """Top-down then bottom-up fusion of three feature maps into one channel count.

    1x1 lateral units bring every level to ``channels``; the coarser level is upsampled
    (nearest, which every runtime supports) and added; a bottom-up pass with stride-2
    depthwise units adds the finer level back (PAN); a depthwise-separable unit smooths
    each output. Only adds, 1x1/3x3 convs, BatchNorm and ReLU6: int8 friendly.

    Args:
        in_channels: Channels of the stride 8, 16 and 32 inputs.
        channels: Channels of every output level.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"LiteFPN needs 3 input levels, got {len(in_channels)}")
        self.channels = channels
        self.laterals = nn.ModuleList(ConvBNAct(c, channels, 1) for c in in_channels)
        self.downsamples = nn.ModuleList(
            ConvBNAct(channels, channels, 3, stride=2, groups=channels) for _ in range(2)
        )
        self.smooth = nn.ModuleList(DepthwiseSeparable(channels, channels) for _ in range(3))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Fuses ``[(N,C8,H/8,W/8), (N,C16,...), (N,C32,...)]`` into three ``channels`` maps."""
        p3, p4, p5 = (lateral(f) for lateral, f in zip(self.laterals, features))
        p4 = p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest")
        p3 = p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest")
        n4 = p4 + _match(self.downsamples[0](p3), p4)
        n5 = p5 + _match(self.downsamples[1](n4), p5)
        return [smooth(p) for smooth, p in zip(self.smooth, (p3, n4, n5))]


def _match(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crops a stride-2 result to ``like``'s size (odd input sizes round up by one)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return x[..., : like.shape[-2], : like.shape[-1]]
