"""A depthwise-separable CNN trunk over log-mel spectrograms for keyword spotting.

DS-CNN (Zhang et al., "Hello Edge: Keyword Spotting on Microcontrollers", 2017): a strided
stem convolution over ``(mels, frames)``, then depthwise-separable units. The trunk feeds
:class:`~ubiq.models.toolchain.heads.classify.ClassifyHead` like any image backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from ubiq.models.toolchain.heads.common import DepthwiseSeparable

__all__ = ["KeywordTrunk"]


class KeywordTrunk(nn.Module):
    """DS-CNN trunk: ``(N, 1, mels, frames)`` log-mel input to one ``(N, C, h, w)`` map.

    Args:
        channels: Channels of every unit (64 is DS-CNN-S, 172 DS-CNN-M).
        blocks: Depthwise-separable units after the stem.
        in_channels: Input channels (1 for a log-mel spectrogram).
    """

    def __init__(self, channels: int = 64, blocks: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, (9, 3), stride=2, padding=(4, 1), bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(inplace=True),
        )
        self.blocks = nn.Sequential(
            *(DepthwiseSeparable(channels, channels) for _ in range(blocks))
        )
        self.out_channels = (channels,)
        self.strides = (2,)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns a one-element list with the ``(N, C, mels/2, frames/2)`` map."""
        return [self.blocks(self.stem(x))]
