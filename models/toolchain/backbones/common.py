"""Building blocks shared by the backbone families.

Every backbone is a :class:`Backbone`: a stem (stride 4 at most) followed by exactly three
stages whose outputs are the stride-8, stride-16 and stride-32 feature maps. Every classifier
is a :class:`Classifier`: a backbone and the family's published classification head. The
classifier's backbone is an ordinary attribute, so ``classifier.backbone.state_dict()`` loads
into ``build_backbone(name)`` after ImageNet pretraining.

Only quantization-friendly activations are used (ReLU, ReLU6, hard-swish, hard-sigmoid), and
every convolution that the papers follow with batch normalization is followed by one here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ActivationFactory = Callable[[], nn.Module]

_ACTIVATIONS: dict[str, ActivationFactory] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "hardsigmoid": lambda: nn.Hardsigmoid(inplace=True),
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to the nearest multiple of ``divisor``, as the MobileNet papers do.

    The result never drops more than 10% below ``value`` and never below ``min_value``
    (``divisor`` when not given).

    Args:
        value: The unrounded channel count (for example ``width * 24``).
        divisor: The multiple to round to.
        min_value: The smallest result allowed.

    Returns:
        The rounded channel count.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def activation(name: str | None) -> nn.Module:
    """Returns a fresh activation module by name, or ``nn.Identity`` for ``None``.

    Args:
        name: One of ``"relu"``, ``"relu6"``, ``"hardswish"``, ``"hardsigmoid"`` or ``None``.

    Returns:
        The activation module.

    Raises:
        ValueError: If the name is not one of the above.
    """
    if name is None:
        return nn.Identity()
    factory = _ACTIVATIONS.get(name)
    if factory is None:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)} or None, got {name!r}")
    return factory()


class ConvBNAct(nn.Sequential):
    """Convolution (no bias), batch normalization, then an optional activation.

    Padding is ``kernel_size // 2``, so a stride-``s`` convolution maps ``H`` to ``ceil(H / s)``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        groups: Convolution groups (``in_channels`` for a depthwise convolution).
        activation_name: Activation after the batch norm, or ``None`` for a linear output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation_name: str | None = "relu",
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            activation(activation_name),
        )
        self.out_channels = out_channels


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce, activation, 1x1 expand, gate, scale.

    Args:
        channels: Input and output channels.
        squeeze_channels: Channels of the bottleneck.
        activation_name: Activation after the reduce convolution.
        gate_name: Gate after the expand convolution (``"hardsigmoid"`` in MobileNetV3 and
            GhostNet).
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation_name: str = "relu",
        gate_name: str = "hardsigmoid",
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = activation(activation_name)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = activation(gate_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scales ``x`` (N, C, H, W) by per-channel weights computed from ``x`` itself."""
        scale = self.gate(self.expand(self.activation(self.reduce(self.pool(x)))))
        return x * scale


class Backbone(nn.Module):
    """A stem followed by three stages that output the stride-8, 16 and 32 feature maps.

    Args:
        stem: Maps the image (N, in_channels, H, W) to stride 4 (or less).
        stages: Exactly three modules; their outputs are returned.
        out_channels: Channels of the three stage outputs.

    Raises:
        ValueError: If there are not exactly three stages and three channel counts.
    """

    def __init__(
        self, stem: nn.Module, stages: list[nn.Module], out_channels: tuple[int, int, int]
    ) -> None:
        super().__init__()
        if len(stages) != 3 or len(out_channels) != 3:
            raise ValueError(
                f"a backbone needs 3 stages and 3 channel counts, got {len(stages)} and "
                f"{len(out_channels)}"
            )
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(int(channels) for channels in out_channels)
        self.strides = (8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Runs the backbone.

        Args:
            x: Images, shape (N, in_channels, H, W).

        Returns:
            Three tensors: (N, C8, H/8, W/8), (N, C16, H/16, W/16) and (N, C32, H/32, W/32)
            with ``C* = self.out_channels`` (sizes round up for sizes that do not divide).
        """
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def backbone_from_layers(layers: list[tuple[nn.Module, int, int]]) -> Backbone:
    """Groups a flat list of layers into a stem and three stages by their cumulative stride.

    Layers that end at stride 4 or less form the stem; the rest form the stride-8, 16 and 32
    stages, each ending where the next stride-2 layer begins.

    Args:
        layers: ``(module, stride, out_channels)`` for every layer, input to output.

    Returns:
        The backbone.

    Raises:
        ValueError: If the layers do not reach stride 32 or go beyond it.
    """
    groups: dict[int, list[nn.Module]] = {4: [], 8: [], 16: [], 32: []}
    channels: dict[int, int] = {}
    total_stride = 1
    for module, stride, out_channels in layers:
        total_stride *= stride
        key = max(total_stride, 4)
        if key not in groups:
            raise ValueError(f"layers must end at stride 32, got stride {total_stride}")
        groups[key].append(module)
        channels[key] = out_channels
    if total_stride != 32:
        raise ValueError(f"layers must end at stride 32, got stride {total_stride}")
    stages = [nn.Sequential(*groups[stride]) for stride in (8, 16, 32)]
    return Backbone(nn.Sequential(*groups[4]), stages, (channels[8], channels[16], channels[32]))


class InvertedResidual(nn.Module):
    """The MobileNetV2/V3 and EfficientNet block: 1x1 expand, depthwise, optional SE, 1x1 project.

    The expansion is skipped when ``expanded_channels == in_channels``; the residual is added
    when the stride is 1 and the channels do not change.

    Args:
        in_channels: Input channels.
        expanded_channels: Channels of the depthwise convolution.
        out_channels: Output channels (linear projection, no activation).
        kernel_size: Depthwise kernel size.
        stride: Depthwise stride.
        activation_name: Activation of the expand and depthwise convolutions.
        squeeze_channels: Bottleneck channels of a squeeze-excite after the depthwise
            convolution, or ``None`` for none.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        activation_name: str = "relu6",
        squeeze_channels: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(
                ConvBNAct(in_channels, expanded_channels, 1, activation_name=activation_name)
            )
        layers.append(
            ConvBNAct(
                expanded_channels,
                expanded_channels,
                kernel_size,
                stride,
                groups=expanded_channels,
                activation_name=activation_name,
            )
        )
        if squeeze_channels is not None:
            layers.append(SqueezeExcite(expanded_channels, squeeze_channels))
        layers.append(ConvBNAct(expanded_channels, out_channels, 1, activation_name=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (N, in_channels, H, W) to (N, out_channels, H / stride, W / stride)."""
        out = self.block(x)
        return x + out if self.use_residual else out


class Classifier(nn.Module):
    """A backbone and a classification head on one of its stage outputs.

    Args:
        backbone: The feature extractor.
        head: Maps the chosen stage output to logits (N, num_classes).
        num_stages: How many backbone stages feed the head (3: the stride-32 output; SqueezeNet
            classifies its stride-16 output and uses 2).
    """

    def __init__(self, backbone: Backbone, head: nn.Module, num_stages: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_stages = num_stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images (N, in_channels, H, W) to logits (N, num_classes)."""
        x = self.backbone.stem(x)
        for stage in self.backbone.stages[: self.num_stages]:
            x = stage(x)
        return self.head(x)


class PooledLinearHead(nn.Sequential):
    """An optional 1x1 conv, global average pool, optional hidden linear, dropout and linear.

    This is the head of MobileNetV2/V3, ShuffleNetV2, GhostNet and EfficientNet.

    Args:
        in_channels: Channels of the stride-32 features.
        num_classes: Output logits.
        conv_channels: Channels of the 1x1 ConvBNAct before pooling, or ``None`` for none.
        conv_activation: Activation of that convolution.
        hidden_features: Features of a hidden linear layer after pooling, or ``None``.
        hidden_activation: Activation of the hidden layer.
        hidden_as_conv: Build the hidden layer as a biased 1x1 convolution (GhostNet's
            ``conv_head``) instead of a linear layer; the parameters are the same.
        dropout: Dropout probability before the last linear layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv_channels: int | None = None,
        conv_activation: str = "relu",
        hidden_features: int | None = None,
        hidden_activation: str = "hardswish",
        hidden_as_conv: bool = False,
        dropout: float = 0.2,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        if conv_channels is not None:
            layers.append(ConvBNAct(channels, conv_channels, 1, activation_name=conv_activation))
            channels = conv_channels
        layers.append(nn.AdaptiveAvgPool2d(1))
        if hidden_features is not None and hidden_as_conv:
            layers += [nn.Conv2d(channels, hidden_features, 1), activation(hidden_activation)]
            channels = hidden_features
        layers.append(nn.Flatten(1))
        if hidden_features is not None and not hidden_as_conv:
            layers += [nn.Linear(channels, hidden_features), activation(hidden_activation)]
            channels = hidden_features
        layers += [nn.Dropout(dropout), nn.Linear(channels, num_classes)]
        super().__init__(*layers)


def initialize_weights(module: nn.Module, mode: str = "fan_out") -> None:
    """Initializes a model in place: Kaiming-normal convolutions, zero biases, unit batch-norm
    weights, and small normal linear weights.

    Args:
        module: The model to initialize.
        mode: Kaiming mode: ``"fan_out"`` (networks with batch norm) or ``"fan_in"``
            (SqueezeNet, which has none and needs the forward signal preserved).
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode=mode, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)
