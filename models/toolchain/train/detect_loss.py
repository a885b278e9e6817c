"""Target assignment and loss of the anchor-free detector.

Assignment follows FCOS (Tian et al., 2019) with centre sampling: a point is a positive
of a ground-truth box when it lies inside the box, within ``radius`` strides of the box
centre, and the box's largest distance from the point falls in the level's scale range;
a point claimed by several boxes takes the smallest. Classification uses the quality
focal loss of GFL (Li et al., 2020): the target of a positive is the IoU of its predicted
box with its ground truth, so the score ranks boxes by localisation quality. Boxes use the
GIoU loss, weighted by the centre-ness of the point.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ubiq.models.toolchain.heads.detect import distances_to_xyxy

__all__ = ["DetectionLoss", "box_iou_pairs"]


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7):
    """IoU and GIoU of matching rows of two ``(N, 4)`` xyxy tensors."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + eps
    iou = inter / union
    enclose = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1)
    giou = iou - (enclose - union) / (enclose + eps)
    return iou, giou


class DetectionLoss:
    """Computes the detector's loss for a batch.

    Args:
        num_classes: Number of classes.
        strides: Strides of the head's levels.
        scale_ranges: Per level ``(low, high]`` range of a box's largest point distance, in
            strides of that level (default: up to 6 strides on the finest level, 6 to 12
            on the next, above 12 on the coarsest... each relative to its own stride).
        radius: Centre-sampling radius in strides.
        box_weight: Weight of the GIoU term.
    """

    def __init__(
        self,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        scale_ranges: Sequence[tuple[float, float]] | None = None,
        radius: float = 2.5,
        box_weight: float = 2.0,
    ) -> None:
        self.num_classes = num_classes
        self.strides = tuple(strides)
        if scale_ranges is None:
            edges = [0.0] + [6.0 * s for s in self.strides[:-1]] + [float("inf")]
            scale_ranges = list(zip(edges[:-1], edges[1:]))
        self.scale_ranges = {s: r for s, r in zip(self.strides, scale_ranges)}
        self.radius = radius
        self.box_weight = box_weight

    def assign(
        self,
        points: torch.Tensor,
        point_strides: torch.Tensor,
        gt_boxes: torch.Tensor,
    ) -> torch.Tensor:
        """Returns the ``(A,)`` index of each point's ground truth, ``-1`` for background."""
        count = points.shape[0]
        if gt_boxes.numel() == 0:
            return torch.full((count,), -1, dtype=torch.long, device=points.device)
        x, y = points[:, 0:1], points[:, 1:2]  # (A, 1)
        left = x - gt_boxes[:, 0]
        top = y - gt_boxes[:, 1]
        right = gt_boxes[:, 2] - x
        bottom = gt_boxes[:, 3] - y
        ltrb = torch.stack((left, top, right, bottom), -1)  # (A, M, 4)
        inside = ltrb.min(-1).values > 0
        centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        reach = point_strides[:, None] * self.radius
        near = ((x - centers[:, 0]).abs() < reach) & ((y - centers[:, 1]).abs() < reach)
        low = torch.tensor(
            [self.scale_ranges[int(s)][0] for s in self.strides], device=points.device
        )
        high = torch.tensor(
            [self.scale_ranges[int(s)][1] for s in self.strides], device=points.device
        )
        level = torch.bucketize(
            point_strides, torch.tensor(self.strides, device=points.device).float()
        )
        largest = ltrb.max(-1).values
        in_range = (largest > low[level][:, None]) & (largest <= high[level][:, None])
        candidate = inside & near & in_range
        areas = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))[None]
        areas = torch.where(candidate, areas.expand_as(candidate), torch.inf)
        smallest, index = areas.min(1)
        return torch.where(torch.isfinite(smallest), index, -1)

    def __call__(
        self,
        outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a batch.

        Args:
            outputs: The detector's ``(logits (N,A,K), distances (N,A,4), points (A,2),
                strides (A,))``.
            targets: Per image ``(boxes (M,4) xyxy in input pixels, class_ids (M,))``.

        Returns:
            ``(loss, parts)``: the scalar loss and its parts as floats for logging.
        """
        logits, distances, points, point_strides = outputs
        device = logits.device
        quality_targets = torch.zeros_like(logits)
        pos_pred, pos_gt, pos_weight = [], [], []
        for image, (boxes, class_ids) in enumerate(targets):
            boxes = boxes.to(device)
            class_ids = class_ids.to(device)
            index = self.assign(points, point_strides, boxes)
            positive = torch.nonzero(index >= 0).squeeze(1)
            if positive.numel() == 0:
                continue
            matched = boxes[index[positive]]
            predicted = distances_to_xyxy(points[positive], distances[image, positive])
            with torch.no_grad():
                iou, _ = box_iou_pairs(predicted, matched)
            quality_targets[image, positive, class_ids[index[positive]]] = iou.clamp(min=0.0)
            pos_pred.append(predicted)
            pos_gt.append(matched)
            pos_weight.append(_centerness(points[positive], matched))
        num_pos = max(sum(p.shape[0] for p in pos_pred), 1)
        scores = logits.sigmoid()
        focal = F.binary_cross_entropy_with_logits(logits, quality_targets, reduction="none")
        focal = focal * (scores - quality_targets).abs().pow(2.0)
        loss_cls = focal.sum() / num_pos
        if pos_pred:
            predicted = torch.cat(pos_pred)
            matched = torch.cat(pos_gt)
            weight = torch.cat(pos_weight)
            _, giou = box_iou_pairs(predicted, matched)
            loss_box = ((1 - giou) * weight).sum() / weight.sum().clamp(min=1e-6)
        else:
            loss_box = distances.sum() * 0.0
        loss = loss_cls + self.box_weight * loss_box
        return loss, {"cls": float(loss_cls.detach()), "box": float(loss_box.detach())}


def _centerness(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    left = points[:, 0] - boxes[:, 0]
    right = boxes[:, 2] - points[:, 0]
    top = points[:, 1] - boxes[:, 1]
    bottom = boxes[:, 3] - points[:, 1]
    horizontal = torch.minimum(left, right) / torch.maximum(left, right).clamp(min=1e-6)
    vertical = torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=1e-6)
    return (horizontal.clamp(min=0) * vertical.clamp(min=0)).sqrt()
