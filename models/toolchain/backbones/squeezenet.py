"""SqueezeNet 1.1.

Reference: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size" (2016), and the authors' version 1.1 (2.4x less computation than 1.0).
As in the paper there is no batch normalization: convolutions have biases and ReLU.

Differences from the published network, each kept small:

- The stem convolution and the max-pools are padded (``padding=1``) instead of unpadded with
  ``ceil_mode``, so every feature map is exactly ``ceil(H / stride)``, like the other
  families. Parameters are unchanged; the MACs grow by about 1%.
- SqueezeNet ends at stride 16 (``fire9``, 512 channels). The stride-32 output of the dense
  backbone is a parameter-free 3x3 max-pool of it. The classifier (dropout, 1x1 conv to the
  classes, ReLU, global average pool) reads the stride-16 features, as published.
- Channels are scaled by ``width`` and rounded to multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from ubiq.models.toolchain.backbones.common import (
    Backbone,
    Classifier,
    backbone_from_layers,
    initialize_weights,
    make_divisible,
)

# Squeeze, expand-1x1 and expand-3x3 channels of fire2..fire9; None marks a stride-2 max-pool.
_FIRES = (
    (16, 64, 64),
    (16, 64, 64),
    None,
    (32, 128, 128),
    (32, 128, 128),
    None,
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
    None,
)


class Fire(nn.Module):
    """A Fire module: a 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated.

    Args:
        in_channels: Input channels.
        squeeze_channels: Channels of the squeeze convolution.
        expand1x1_channels: Output channels of the 1x1 expand.
        expand3x3_channels: Output channels of the 3x3 expand.
    """

    def __init__(
        self,
        in_channels: int,
        squeeze_channels: int,
        expand1x1_channels: int,
        expand3x3_channels: int,
    ) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(in_channels, squeeze_channels, 1), nn.ReLU(True))
        self.expand1x1 = nn.Sequential(
            nn.Conv2d(squeeze_channels, expand1x1_channels, 1), nn.ReLU(True)
        )
        self.expand3x3 = nn.Sequential(
            nn.Conv2d(squeeze_channels, expand3x3_channels, 3, padding=1), nn.ReLU(True)
        )
        self.out_channels = expand1x1_channels + expand3x3_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (N, in_channels, H, W) to (N, expand1x1 + expand3x3 channels, H, W)."""
        x = self.squeeze(x)
        return torch.cat((self.expand1x1(x), self.expand3x3(x)), dim=1)


def squeezenet1_1(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the SqueezeNet 1.1 backbone.

    Args:
        width: Channel multiplier.
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (256, 512, 512) at width 1.0.
    """
    channels = make_divisible(64 * width)
    stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 2, padding=1), nn.ReLU(True))
    layers: list[tuple[nn.Module, int, int]] = [
        (stem, 2, channels),
        (nn.MaxPool2d(3, 2, padding=1), 2, channels),
    ]
    for fire in _FIRES:
        if fire is None:
            layers.append((nn.MaxPool2d(3, 2, padding=1), 2, channels))
            continue
        squeeze, expand1x1, expand3x3 = (make_divisible(value * width) for value in fire)
        module = Fire(channels, squeeze, expand1x1, expand3x3)
        channels = module.out_channels
        layers.append((module, 1, channels))
    backbone = backbone_from_layers(layers)
    initialize_weights(backbone, mode="fan_in")
    return backbone


def squeezenet1_1_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds SqueezeNet 1.1 for classification on its stride-16 features.

    The head is the published one: dropout, 1x1 convolution to the classes, ReLU, global
    average pool (the logits are therefore non-negative).

    Args:
        num_classes: Output logits.
        width: Channel multiplier.
        in_channels: Image channels.
        dropout: Dropout before the classifier convolution (the paper uses 0.5).

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    backbone = squeezenet1_1(width, in_channels)
    classifier_conv = nn.Conv2d(backbone.out_channels[1], num_classes, 1)
    head = nn.Sequential(
        nn.Dropout(dropout),
        classifier_conv,
        nn.ReLU(True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )
    nn.init.normal_(classifier_conv.weight, 0.0, 0.01)
    nn.init.zeros_(classifier_conv.bias)
    return Classifier(backbone, head, num_stages=2)
