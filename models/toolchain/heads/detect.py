"""Anchor-free one-stage detection head (FCOS / NanoDet style) and its export form.

Every location of the stride 8, 16 and 32 maps is a point ``((x + 0.5) * s, (y + 0.5) * s)``
in input pixels. Per point the head predicts ``num_classes`` logits and four distances
``left, top, right, bottom`` (ReLU, in strides) to the box edges. Class scores are trained
as IoU-aware qualities (quality focal loss), so one sigmoid score ranks boxes and no
separate centerness branch is needed.

The export form concatenates ``cx, cy, w, h`` in input pixels and the sigmoid scores into
one ``(N, 4 + num_classes, A)`` tensor: the same layout as an Ultralytics YOLO export, so
the runtime's ``yolo`` decoder (threshold, class-aware NMS) reads it with no new code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ubiq.models.toolchain.heads.common import DepthwiseSeparable

__all__ = ["AnchorFreeHead", "distances_to_xyxy", "make_points"]


class AnchorFreeHead(nn.Module):
    """Per-level towers of depthwise-separable units and one 1x1 predictor per level.

    Args:
        num_classes: Number of object classes.
        channels: Channels of the neck's output levels.
        strides: Strides of the levels.
        num_convs: Depthwise-separable units per tower.
        prior: Initial foreground probability (bias of the class logits).
    """

    def __init__(
        self,
        num_classes: int,
        channels: int = 64,
        strides: Sequence[int] = (8, 16, 32),
        num_convs: int = 2,
        prior: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.towers = nn.ModuleList(
            nn.Sequential(*(DepthwiseSeparable(channels, channels) for _ in range(num_convs)))
            for _ in self.strides
        )
        self.predictors = nn.ModuleList(
            nn.Conv2d(channels, num_classes + 4, 1) for _ in self.strides
        )
        bias = -float(torch.log(torch.tensor((1 - prior) / prior)))
        for predictor in self.predictors:
            nn.init.normal_(predictor.weight, std=0.01)
            nn.init.constant_(predictor.bias[:num_classes], bias)
            # Start boxes about two strides from their point on every side.
            nn.init.constant_(predictor.bias[num_classes:], 2.0)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts every point of every level.

        Args:
            features: The neck's ``(N, C, H/s, W/s)`` maps, one per stride.

        Returns:
            ``(class_logits, distances)``: ``(N, A, num_classes)`` logits and ``(N, A, 4)``
            non-negative ``l, t, r, b`` distances in input pixels, levels concatenated in
            stride order, points in row-major order within a level.
        """
        logits, distances = [], []
        for tower, predictor, stride, feature in zip(
            self.towers, self.predictors, self.strides, features
        ):
            out = predictor(tower(feature)).flatten(2).transpose(1, 2)  # (N, HW, nc + 4)
            logits.append(out[..., : self.num_classes])
            distances.append(F.relu(out[..., self.num_classes :]) * stride)
        return torch.cat(logits, 1), torch.cat(distances, 1)


def make_points(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the ``(A, 2)`` point centres ``x, y`` in input pixels and their ``(A,)`` strides.

    Args:
        shapes: ``(height, width)`` of each level's map.
        strides: Stride of each level.
        device: Torch device of the result.
    """
    points, point_strides = [], []
    for (height, width), stride in zip(shapes, strides):
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.flatten(), grid_y.flatten()), -1))
        point_strides.append(torch.full((height * width,), float(stride), device=device))
    return torch.cat(points), torch.cat(point_strides)


def distances_to_xyxy(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """``(A, 2)`` points and ``(..., A, 4)`` ``l, t, r, b`` distances to ``x1, y1, x2, y2``."""
    return torch.cat((points - distances[..., :2], points + distances[..., 2:]), -1)
