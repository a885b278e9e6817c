"""EfficientNet-Lite0.

References: Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks" (2019), and the EfficientNet-Lite variants of the TensorFlow TPU repository, which
make B0 friendly to integer accelerators: no squeeze-excite, ReLU6 instead of swish, and a
fixed 32-channel stem and 1280-channel head whatever the width.

The MBConv blocks are those of B0 (kernels 3 and 5, expansion 1 then 6). Padding is symmetric
(``kernel // 2``) rather than TensorFlow's "same", so feature maps are ``ceil(H / stride)``.
Stochastic depth is a training detail and is left to the trainer.

The dense backbone ends at the last MBConv block (320 channels); the 1x1 convolution to 1280
channels only serves classification and is part of the classifier head.
"""

from __future__ import annotations

from torch import nn

from ubiq.models.toolchain.backbones.common import (
    Backbone,
    Classifier,
    ConvBNAct,
    InvertedResidual,
    PooledLinearHead,
    backbone_from_layers,
    initialize_weights,
    make_divisible,
)

# Expansion, kernel, output channels, repeats, first stride (EfficientNet-B0, Table 1).
_BLOCKS = (
    (1, 3, 16, 1, 1),
    (6, 3, 24, 2, 2),
    (6, 5, 40, 2, 2),
    (6, 3, 80, 3, 2),
    (6, 5, 112, 3, 1),
    (6, 5, 192, 4, 2),
    (6, 3, 320, 1, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def efficientnet_lite0(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the EfficientNet-Lite0 backbone.

    Args:
        width: Channel multiplier of the MBConv blocks (the stem stays at 32 channels).
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (40, 112, 320) at width 1.0.
    """
    channels = _STEM_CHANNELS
    layers: list[tuple[nn.Module, int, int]] = [
        (ConvBNAct(in_channels, channels, 3, 2, activation_name="relu6"), 2, channels)
    ]
    for expansion, kernel, out_channels, repeats, first_stride in _BLOCKS:
        out_channels = make_divisible(out_channels * width)
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            block = InvertedResidual(
                channels, channels * expansion, out_channels, kernel, stride, "relu6"
            )
            layers.append((block, stride, out_channels))
            channels = out_channels
    backbone = backbone_from_layers(layers)
    initialize_weights(backbone)
    return backbone


def efficientnet_lite0_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds EfficientNet-Lite0 for classification: 1x1 conv to 1280, pool, linear.

    Args:
        num_classes: Output logits.
        width: Channel multiplier of the MBConv blocks (the 1280 head is fixed).
        in_channels: Image channels.
        dropout: Dropout before the linear layer (0.2 for Lite0).

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    backbone = efficientnet_lite0(width, in_channels)
    head = PooledLinearHead(
        backbone.out_channels[2],
        num_classes,
        conv_channels=_HEAD_CHANNELS,
        conv_activation="relu6",
        dropout=dropout,
    )
    initialize_weights(head)
    return Classifier(backbone, head)
