"""Efficient backbones (torch side, never imported by the runtime).

```python
from ubiq.models.toolchain.backbones import build_backbone, build_classifier

backbone = build_backbone("mobilenet_v2", width=0.5)
features = backbone(images)  # [(N, C8, H/8, W/8), (N, C16, H/16, W/16), (N, C32, H/32, W/32)]
backbone.out_channels        # (C8, C16, C32)
model = build_classifier("ghostnet", num_classes=10)  # (N, 3, H, W) -> (N, 10)
```

Importing this package does not import torch; building a model does. The dense backbone of
each family stops before the family's classification-only layers (such as MobileNetV2's
320->1280 convolution), which are part of the classifier head instead; a classifier's
``backbone`` attribute has the same parameter names as ``build_backbone(name)``, so ImageNet
weights transfer by ``backbone.load_state_dict(classifier.backbone.state_dict())``.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING

from ubiq.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

BACKBONES: tuple[str, ...] = (
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2",
    "ghostnet",
    "squeezenet1_1",
    "efficientnet_lite0",
)

# name -> (module in this package, backbone builder, classifier builder)
_BUILDERS: dict[str, tuple[str, str, str]] = {
    "mobilenet_v2": ("mobilenet", "mobilenet_v2", "mobilenet_v2_classifier"),
    "mobilenet_v3_small": ("mobilenet", "mobilenet_v3_small", "mobilenet_v3_small_classifier"),
    "mobilenet_v3_large": ("mobilenet", "mobilenet_v3_large", "mobilenet_v3_large_classifier"),
    "shufflenet_v2": ("shufflenet", "shufflenet_v2", "shufflenet_v2_classifier"),
    "ghostnet": ("ghostnet", "ghostnet", "ghostnet_classifier"),
    "squeezenet1_1": ("squeezenet", "squeezenet1_1", "squeezenet1_1_classifier"),
    "efficientnet_lite0": ("efficientnet", "efficientnet_lite0", "efficientnet_lite0_classifier"),
}


def list_backbones() -> list[str]:
    """Returns the names of the backbone families, in ``BACKBONES`` order."""
    return list(BACKBONES)


def _positive_int(value: object, parameter: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{parameter} must be a positive integer for {name!r}, got {value!r}")
    return value


def _builder(name: str, width: float, in_channels: int, index: int):
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ConfigError(f"unknown backbone {name!r}; expected one of: {', '.join(BACKBONES)}")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ConfigError(f"width must be a number > 0 for backbone {name!r}, got {width!r}")
    _positive_int(in_channels, "in_channels", name)
    module_name = _BUILDERS[name][0]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, _BUILDERS[name][index])


def build_backbone(name: str, width: float = 1.0, in_channels: int = 3) -> nn.Module:
    """Builds a dense backbone with freshly initialized weights.

    Args:
        name: One of ``BACKBONES``.
        width: Channel multiplier (> 0); channels are rounded as the family's paper does.
        in_channels: Image channels.

    Returns:
        A module mapping (N, in_channels, H, W) to three features (N, C, ceil(H / s),
        ceil(W / s)) for strides ``s`` in ``backbone.strides == (8, 16, 32)``, with
        ``C`` from ``backbone.out_channels``.

    Raises:
        ConfigError: If the name is unknown, or the width or channels are not positive.
    """
    return _builder(name, width, in_channels, 1)(float(width), in_channels)


def build_classifier(
    name: str,
    num_classes: int = 1000,
    width: float = 1.0,
    in_channels: int = 3,
    dropout: float = 0.2,
) -> nn.Module:
    """Builds a backbone with its family's published classification head.

    Args:
        name: One of ``BACKBONES``.
        num_classes: Output logits.
        width: Channel multiplier (> 0).
        in_channels: Image channels.
        dropout: Dropout probability before the last layer, in [0, 1).

    Returns:
        A module mapping (N, in_channels, H, W) to logits (N, num_classes); its ``backbone``
        attribute is the dense backbone.

    Raises:
        ConfigError: If the name is unknown, or a size or the dropout is invalid.
    """
    builder = _builder(name, width, in_channels, 2)
    _positive_int(num_classes, "num_classes", name)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1) for {name!r}, got {dropout!r}")
    return builder(num_classes, float(width), in_channels, float(dropout))


__all__ = ["BACKBONES", "build_backbone", "build_classifier", "list_backbones"]
