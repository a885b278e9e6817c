"""Models assembled from injected parts: backbone, neck and head (torch side).

A :class:`ModelConfig` is all a checkpoint needs to rebuild its model; ``ubiq train``
stores it beside the weights and ``ubiq export`` reads it back.

```python
config = ModelConfig(task="detect", backbone="mobilenet_v2", width=0.5, labels=("cat", "cup"))
model = build_model(config)          # Detector(backbone, LiteFPN, AnchorFreeHead)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ubiq.errors import ConfigError
from ubiq.models.toolchain.heads.classify import ClassifyHead
from ubiq.models.toolchain.heads.detect import AnchorFreeHead, distances_to_xyxy, make_points
from ubiq.models.toolchain.heads.kws import KeywordTrunk
from ubiq.models.toolchain.heads.neck import LiteFPN
from ubiq.models.toolchain.heads.segment import LRASPPHead

__all__ = [
    "TASKS",
    "Classifier",
    "Detector",
    "ModelConfig",
    "Segmenter",
    "build_model",
]

TASKS = ("detect", "classify", "segment", "kws")
MAX_STRIDE = 32


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model.

    Attributes:
        task: ``detect``, ``classify``, ``segment`` or ``kws``.
        backbone: Backbone name (see ``ubiq models backbones``); ``dscnn`` for ``kws``.
        labels: Class names; ``segment`` counts background as class 0 of ``labels``.
        width: Width multiplier of the backbone.
        imgsz: Input ``(height, width)``; for ``kws`` ``(mels, frames)``.
        in_channels: Input channels (3 for images, 1 for spectrograms).
        neck_channels: Channels of the detection neck and head.
        head_convs: Depthwise-separable units per detection tower.
        dropout: Dropout before the classification layer.
    """

    task: str
    backbone: str
    labels: tuple[str, ...]
    width: float = 1.0
    imgsz: tuple[int, int] = (320, 320)
    in_channels: int = 3
    neck_channels: int = 64
    head_convs: int = 2
    dropout: float = 0.2
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if not self.labels:
            raise ConfigError("labels must name at least one class")
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        imgsz = tuple(int(v) for v in self.imgsz)
        if len(imgsz) != 2 or min(imgsz) <= 0:
            raise ConfigError(f"imgsz must be (height, width) > 0, got {self.imgsz}")
        if self.task != "kws" and any(v % MAX_STRIDE for v in imgsz):
            raise ConfigError(
                f"image size {imgsz[1]}x{imgsz[0]} is not divisible by the stride "
                f"{MAX_STRIDE}; use a multiple of {MAX_STRIDE} such as "
                f"{max(MAX_STRIDE, round(imgsz[1] / MAX_STRIDE) * MAX_STRIDE)}"
            )
        object.__setattr__(self, "imgsz", imgsz)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["imgsz"] = list(self.imgsz)
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        values = dict(data)
        values["labels"] = tuple(values.get("labels", ()))
        if "imgsz" in values:
            values["imgsz"] = tuple(values["imgsz"])
        return cls(**values)


class Classifier(nn.Module):
    """Backbone (or keyword trunk) and a :class:`ClassifyHead`: ``(N, C, H, W) -> (N, K)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class Segmenter(nn.Module):
    """Backbone and an LR-ASPP head: ``(N, 3, H, W) -> (N, K, H, W)`` logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class Detector(nn.Module):
    """Backbone, :class:`LiteFPN` neck and :class:`AnchorFreeHead`.

    ``forward`` returns what the loss needs; :meth:`predict` returns the export form
    ``(N, 4 + K, A)``: ``cx, cy, w, h`` as fractions of the input width and height, then
    sigmoid scores. Boxes and scores then share one range (0..1), so an int8 export can
    quantize the tensor with one scale and keep both (boxes in pixels would leave every
    score at zero); the runtime's ``yolo`` decoder scales them back (``normalized``).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: AnchorFreeHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.export_mode = False

    @property
    def strides(self) -> tuple[int, ...]:
        return self.head.strides

    def forward(self, x: torch.Tensor):
        """Returns ``(logits (N,A,K), distances (N,A,4), points (A,2), strides (A,))``.

        With ``export_mode`` set (as :func:`ubiq.models.toolchain.export` does), returns
        :meth:`predict`'s tensor instead.
        """
        features = self.neck(self.backbone(x))
        logits, distances = self.head(features)
        shapes = [tuple(f.shape[-2:]) for f in features]
        points, point_strides = make_points(shapes, self.strides, device=x.device)
        if self.export_mode:
            return _export_tensor(logits, distances, points, x.shape[-2:])
        return logits, distances, points, point_strides

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Returns ``(N, 4 + K, A)``: normalized ``cx, cy, w, h`` and sigmoid scores."""
        logits, distances, points, _ = self._raw(x)
        return _export_tensor(logits, distances, points, x.shape[-2:])

    def _raw(self, x: torch.Tensor):
        mode = self.export_mode
        self.export_mode = False
        try:
            return self.forward(x)
        finally:
            self.export_mode = mode


def _export_tensor(
    logits: torch.Tensor, distances: torch.Tensor, points: torch.Tensor, size
) -> torch.Tensor:
    height, width = int(size[0]), int(size[1])
    scale = torch.tensor([1.0 / width, 1.0 / height], device=logits.device)
    boxes = distances_to_xyxy(points, distances)
    centers = (boxes[..., :2] + boxes[..., 2:]) * (scale / 2)
    sizes = (boxes[..., 2:] - boxes[..., :2]) * scale
    return torch.cat((centers, sizes, logits.sigmoid()), -1).transpose(1, 2)


def build_model(config: ModelConfig) -> nn.Module:
    """Builds the model a config describes.

    Raises:
        ConfigError: If the backbone name is unknown or the config is invalid.
    """
    if config.task == "kws":
        if config.backbone == "dscnn":
            trunk = KeywordTrunk(
                channels=int(config.extra.get("channels", 64)),
                blocks=int(config.extra.get("blocks", 4)),
                in_channels=config.in_channels,
            )
        else:
            trunk = _backbone(config)
        head = ClassifyHead(trunk.out_channels[-1], config.num_classes, 0, config.dropout)
        return Classifier(trunk, head)
    backbone = _backbone(config)
    if config.task == "classify":
        head = ClassifyHead(
            backbone.out_channels[-1], config.num_classes, hidden=256, dropout=config.dropout
        )
        return Classifier(backbone, head)
    if config.task == "segment":
        low, high = backbone.out_channels[0], backbone.out_channels[-1]
        return Segmenter(backbone, LRASPPHead(low, high, config.num_classes))
    neck = LiteFPN(backbone.out_channels, config.neck_channels)
    head = AnchorFreeHead(
        config.num_classes, config.neck_channels, backbone.strides, config.head_convs
    )
    return Detector(backbone, neck, head)


def _backbone(config: ModelConfig) -> nn.Module:
    from ubiq.models.toolchain.backbones import build_backbone

    return build_backbone(config.backbone, width=config.width, in_channels=config.in_channels)
