"""Parameter and multiply-accumulate counts.

``count_macs`` counts the multiply-accumulates (MACs) of the convolution and linear layers
only, by running one forward pass with hooks:

- ``Conv1d/2d/3d``: ``output elements * (in_channels / groups) * kernel elements``;
- ``ConvTranspose1d/2d/3d``: ``input elements * (out_channels / groups) * kernel elements``;
- ``Linear``: ``output elements * in_features``.

Not counted: bias additions, batch normalization (folded into the convolutions at export),
activations, pooling, residual additions, squeeze-excite scaling and concatenation. This is
the convention of the MobileNet, ShuffleNet, GhostNet and EfficientNet papers, so the counts
compare with their published "MAdds"/"FLOPs" at 224 px.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Counts a model's parameters (shared parameters once).

    Args:
        model: The model.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The number of scalar parameters.
    """
    return sum(
        parameter.numel()
        for parameter in model.parameters()
        if parameter.requires_grad or not trainable_only
    )


def _layer_macs(layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    if isinstance(layer, _CONVOLUTIONS):
        kernel = math.prod(layer.kernel_size)
        return output.numel() * (layer.in_channels // layer.groups) * kernel
    if isinstance(layer, _TRANSPOSED):
        kernel = math.prod(layer.kernel_size)
        return inputs[0].numel() * (layer.out_channels // layer.groups) * kernel
    return output.numel() * layer.in_features


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Counts the multiply-accumulates of one forward pass (see the module docstring).

    The model runs once in eval mode without gradients on a zero input of ``input_shape``,
    on the device and dtype of its first parameter; its training mode is restored after.

    Args:
        model: The model; its forward must accept one tensor.
        input_shape: The input shape, batch included (the count grows with the batch).

    Returns:
        The number of multiply-accumulates.

    Raises:
        ValueError: If ``input_shape`` has a non-positive dimension.
    """
    if not input_shape or any(int(size) <= 0 for size in input_shape):
        raise ValueError(f"input_shape must have positive sizes, got {tuple(input_shape)}")
    total = 0

    def hook(layer: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        total += _layer_macs(layer, inputs, output)

    handles = [
        layer.register_forward_hook(hook)
        for layer in model.modules()
        if isinstance(layer, (*_CONVOLUTIONS, *_TRANSPOSED, nn.Linear))
    ]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(int(size) for size in input_shape), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def backbone_report(name: str, width: float = 1.0, imgsz: int = 224) -> dict[str, Any]:
    """Measures one backbone family at one width.

    Args:
        name: A name from ``BACKBONES``.
        width: Channel multiplier.
        imgsz: Square input size in pixels.

    Returns:
        ``name``, ``width``, ``imgsz``; ``params`` and ``macs`` of the 1000-class classifier
        (comparable with the papers); ``backbone_params`` and ``backbone_macs`` of the dense
        backbone alone; and its ``out_channels``.

    Raises:
        ConfigError: If the name or width is invalid.
    """
    from ubiq.models.toolchain.backbones import build_backbone, build_classifier

    shape = (1, 3, imgsz, imgsz)
    classifier = build_classifier(name, 1000, width)
    backbone = build_backbone(name, width)
    return {
        "name": name,
        "width": width,
        "params": count_parameters(classifier),
        "macs": count_macs(classifier, shape),
        "imgsz": imgsz,
        "backbone_params": count_parameters(backbone),
        "backbone_macs": count_macs(backbone, shape),
        "out_channels": list(backbone.out_channels),
    }
