"""MobileNetV2 and MobileNetV3 (Small and Large).

References: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (2018);
Howard et al., "Searching for MobileNetV3" (2019). The block tables below are those of the
papers; channel counts are scaled by ``width`` and rounded with ``make_divisible(8)``.

The dense backbone ends at the last inverted-residual block (MobileNetV2: 320 channels at
stride 32; V3-Large: 160; V3-Small: 96). The expensive 1x1 convolution that follows it in the
papers (320->1280, 160->960, 96->576) only serves classification, so it is part of the
classifier head, not of the backbone: a detector built on the backbone stays light.
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

# MobileNetV2: expansion t, output channels c, repeats n, first stride s.
_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# MobileNetV3: kernel, expanded channels, output channels, squeeze-excite, activation, stride.
_V3_LARGE_BLOCKS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
_V3_SMALL_BLOCKS = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)
# V3 classifier hidden layer (hard-swish) before the last linear layer, scaled with width.
_V3_HIDDEN = {"large": 1280, "small": 1024}


def mobilenet_v2(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the MobileNetV2 backbone.

    Args:
        width: Channel multiplier.
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (32, 96, 320) at width 1.0.
    """
    channels = make_divisible(32 * width)
    layers: list[tuple[nn.Module, int, int]] = [
        (ConvBNAct(in_channels, channels, 3, 2, activation_name="relu6"), 2, channels)
    ]
    for expansion, out_channels, repeats, first_stride in _V2_BLOCKS:
        out_channels = make_divisible(out_channels * width)
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            block = InvertedResidual(
                channels, round(channels * expansion), out_channels, 3, stride, "relu6"
            )
            layers.append((block, stride, out_channels))
            channels = out_channels
    backbone = backbone_from_layers(layers)
    initialize_weights(backbone)
    return backbone


def mobilenet_v2_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds MobileNetV2 for classification: backbone, 1x1 conv to 1280, pool, linear.

    Args:
        num_classes: Output logits.
        width: Channel multiplier (the 1280 head is only ever scaled up).
        in_channels: Image channels.
        dropout: Dropout before the last linear layer.

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    backbone = mobilenet_v2(width, in_channels)
    head = PooledLinearHead(
        backbone.out_channels[2],
        num_classes,
        conv_channels=make_divisible(1280 * max(1.0, width)),
        conv_activation="relu6",
        dropout=dropout,
    )
    initialize_weights(head)
    return Classifier(backbone, head)


def _mobilenet_v3(variant: str, width: float, in_channels: int) -> Backbone:
    blocks = _V3_LARGE_BLOCKS if variant == "large" else _V3_SMALL_BLOCKS
    channels = make_divisible(16 * width)
    layers: list[tuple[nn.Module, int, int]] = [
        (ConvBNAct(in_channels, channels, 3, 2, activation_name="hardswish"), 2, channels)
    ]
    for kernel, expanded, out_channels, use_se, activation_name, stride in blocks:
        expanded = make_divisible(expanded * width)
        out_channels = make_divisible(out_channels * width)
        squeeze = make_divisible(expanded // 4) if use_se else None
        block = InvertedResidual(
            channels, expanded, out_channels, kernel, stride, activation_name, squeeze
        )
        layers.append((block, stride, out_channels))
        channels = out_channels
    backbone = backbone_from_layers(layers)
    initialize_weights(backbone)
    return backbone


def mobilenet_v3_large(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the MobileNetV3-Large backbone.

    Args:
        width: Channel multiplier.
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (40, 112, 160) at width 1.0.
    """
    return _mobilenet_v3("large", width, in_channels)


def mobilenet_v3_small(width: float = 1.0, in_channels: int = 3) -> Backbone:
    """Builds the MobileNetV3-Small backbone.

    Args:
        width: Channel multiplier.
        in_channels: Image channels.

    Returns:
        The backbone; ``out_channels`` is (24, 48, 96) at width 1.0.
    """
    return _mobilenet_v3("small", width, in_channels)


def _mobilenet_v3_classifier(
    variant: str, num_classes: int, width: float, in_channels: int, dropout: float
) -> Classifier:
    backbone = _mobilenet_v3(variant, width, in_channels)
    last_channels = backbone.out_channels[2]
    head = PooledLinearHead(
        last_channels,
        num_classes,
        conv_channels=6 * last_channels,
        conv_activation="hardswish",
        hidden_features=make_divisible(_V3_HIDDEN[variant] * width),
        hidden_activation="hardswish",
        dropout=dropout,
    )
    initialize_weights(head)
    return Classifier(backbone, head)


def mobilenet_v3_large_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds MobileNetV3-Large for classification: 1x1 conv to 960, pool, 1280 hidden, linear.

    Args:
        num_classes: Output logits.
        width: Channel multiplier.
        in_channels: Image channels.
        dropout: Dropout before the last linear layer.

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    return _mobilenet_v3_classifier("large", num_classes, width, in_channels, dropout)


def mobilenet_v3_small_classifier(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, dropout: float = 0.2
) -> Classifier:
    """Builds MobileNetV3-Small for classification: 1x1 conv to 576, pool, 1024 hidden, linear.

    Args:
        num_classes: Output logits.
        width: Channel multiplier.
        in_channels: Image channels.
        dropout: Dropout before the last linear layer.

    Returns:
        The classifier, (N, in_channels, H, W) -> (N, num_classes).
    """
    return _mobilenet_v3_classifier("small", num_classes, width, in_channels, dropout)
