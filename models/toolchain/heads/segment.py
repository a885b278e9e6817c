"""Segmentation head in the style of LR-ASPP (MobileNetV3, Howard et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ubiq.models.toolchain.heads.common import ConvBNAct

__all__ = ["LRASPPHead"]


class LRASPPHead(nn.Module):
    """Lite reduced atrous spatial pyramid pooling over the stride-8 and stride-32 features.

    The stride-32 branch is a 1x1 unit gated by a global-pool sigmoid attention (the
    squeeze-excite of LR-ASPP); it is upsampled to stride 8, classified, and added to a
    linear classifier of the stride-8 features. Output logits are at stride 8; the model
    upsamples them to the input size.

    Args:
        low_channels: Channels of the stride-8 features.
        high_channels: Channels of the stride-32 features.
        num_classes: Classes including background.
        inter_channels: Channels of the high branch.
    """

    def __init__(
        self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128
    ) -> None:
        super().__init__()
        self.branch = ConvBNAct(high_channels, inter_channels, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Hardsigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Returns ``(N, num_classes, H/8, W/8)`` logits."""
        low, high = features[0], features[-1]
        x = self.branch(high) * self.gate(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)
