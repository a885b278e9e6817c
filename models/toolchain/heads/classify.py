"""Classification head: pooled stride-32 features to class logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ubiq.models.toolchain.heads.common import ConvBNAct

__all__ = ["ClassifyHead"]


class ClassifyHead(nn.Module):
    """1x1 expansion unit, global average pool, dropout and a linear layer.

    Args:
        in_channels: Channels of the stride-32 feature map.
        num_classes: Number of classes.
        hidden: Channels of the 1x1 expansion (0 skips it).
        dropout: Dropout before the linear layer.
    """

    def __init__(
        self, in_channels: int, num_classes: int, hidden: int = 256, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.expand = ConvBNAct(in_channels, hidden, 1) if hidden else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden or in_channels, num_classes)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Returns ``(N, num_classes)`` logits from the last of the backbone's features."""
        x = self.pool(self.expand(features[-1])).flatten(1)
        return self.linear(self.dropout(x))
