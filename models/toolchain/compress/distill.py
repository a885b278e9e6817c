"""Knowledge distillation: a frozen teacher's outputs as extra targets for a student.

- Classification: Hinton et al. (2015), the KL divergence between the temperature-softened
  class distributions of teacher and student, scaled by ``T**2`` so that its gradients
  keep their size as ``T`` changes (:func:`logit_kd_loss`).
- Detection (the anchor-free detector of :mod:`ubiq.models.toolchain.nets`, whose points are the
  same for teacher and student at one input size): a per-class binary KL divergence
  between the sigmoid scores of teacher and student, weighted per point by the larger of
  the teacher's and the student's best score so that the thousands of background points
  do not drown the few objects, plus a GIoU term between the teacher's and the student's
  boxes at the points where the teacher is confident (:func:`detection_kd_loss`).

``ubiq train --teacher CKPT`` loads the teacher with :func:`load_teacher`, which checks
that it solves the same task on the same classes at the same input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ubiq.errors import ConfigError

__all__ = ["DistillOptions", "detection_kd_loss", "load_teacher", "logit_kd_loss"]

DISTILL_TASKS = ("detect", "classify")


@dataclass(frozen=True)
class DistillOptions:
    """How much of the teacher the student learns.

    Attributes:
        weight: Factor of the distillation loss added to the task loss.
        temperature: Softening temperature of the teacher's and the student's logits.
    """

    weight: float = 1.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConfigError(f"kd_weight must be >= 0, got {self.weight}")
        if not self.temperature > 0:
            raise ConfigError(f"kd_temperature must be positive, got {self.temperature}")


def logit_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """Hinton distillation loss of classification logits.

    ``KL(softmax(teacher / T) || softmax(student / T)) * T**2``, summed over classes and
    averaged over the batch. The teacher's logits are detached.

    Args:
        student_logits: ``(N, K)`` logits of the student.
        teacher_logits: ``(N, K)`` logits of the teacher.
        temperature: Softening temperature ``T``.

    Returns:
        A scalar tensor, 0 where the two agree.

    Raises:
        ValueError: If the shapes differ or are not ``(N, K)``, or ``temperature <= 0``.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must both have shape (N, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    student_log_probs = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    divergence = F.kl_div(
        student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True
    )
    return divergence * temperature**2


def detection_kd_loss(
    student_out: tuple[torch.Tensor, ...],
    teacher_out: tuple[torch.Tensor, ...],
    *,
    temperature: float = 1.0,
    box_weight: float = 2.0,
    score_threshold: float = 0.05,
) -> torch.Tensor:
    """Distillation loss of the anchor-free detector (scores and boxes).

    Scores: per point and class, the binary KL divergence ``KL(q || p)`` between the
    teacher's ``q = sigmoid(t / T)`` and the student's ``p = sigmoid(s / T)``, times
    ``T**2``, summed over classes. Point ``a`` weighs ``w_a = max(max_k q1_ak, max_k
    p1_ak)`` (the scores at ``T = 1``, detached): the teacher's objects count, and so do
    the student's false alarms, while background on which both are quiet hardly does.
    The sum is divided by the sum of the weights.

    Boxes: ``1 - GIoU`` between the student's and the teacher's boxes at each point whose
    teacher score ``max_k q1_ak`` reaches ``score_threshold``, weighted by that score and
    divided by the sum of those weights (0 where the teacher sees nothing).

    Args:
        student_out: The student's ``(logits (N,A,K), distances (N,A,4), points (A,2),
            strides (A,))`` as :class:`ubiq.models.toolchain.nets.Detector` returns them.
        teacher_out: The teacher's outputs of the same form and shapes (detached here).
        temperature: Softening temperature ``T`` of the scores.
        box_weight: Factor of the box term.
        score_threshold: Smallest teacher score at which a point's box is distilled.

    Returns:
        A scalar tensor, 0 where the two agree.

    Raises:
        ValueError: If the logits or distances of the two differ in shape, or
            ``temperature <= 0``.
    """
    from ubiq.models.toolchain.heads.detect import distances_to_xyxy
    from ubiq.models.toolchain.train.detect_loss import box_iou_pairs

    student_logits, student_distances, points = student_out[0], student_out[1], student_out[2]
    teacher_logits = teacher_out[0].detach()
    teacher_distances = teacher_out[1].detach()
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must have the same shape (N, A, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}; "
            "train both at the same image size"
        )
    if student_distances.shape != teacher_distances.shape:
        raise ValueError(
            "student and teacher distances must have the same shape (N, A, 4), got "
            f"{tuple(student_distances.shape)} and {tuple(teacher_distances.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    teacher_scores = teacher_logits.sigmoid()
    teacher_best = teacher_scores.max(-1).values  # (N, A)
    student_best = student_logits.detach().sigmoid().max(-1).values
    weight = torch.maximum(teacher_best, student_best)
    soft_targets = (teacher_logits / temperature).sigmoid()
    # BCE(s, q) - BCE(t, q) = KL(q || p) per element: 0 where the logits agree.
    divergence = F.binary_cross_entropy_with_logits(
        student_logits / temperature, soft_targets, reduction="none"
    ) - F.binary_cross_entropy_with_logits(
        teacher_logits / temperature, soft_targets, reduction="none"
    )
    score_loss = (divergence.sum(-1) * weight).sum() / weight.sum().clamp(min=1e-6)
    score_loss = score_loss * temperature**2
    confident = teacher_best >= score_threshold
    if not bool(confident.any()):
        return score_loss + student_distances.sum() * 0.0
    image_index, point_index = torch.nonzero(confident, as_tuple=True)
    anchor_points = points[point_index]
    student_boxes = distances_to_xyxy(anchor_points, student_distances[image_index, point_index])
    teacher_boxes = distances_to_xyxy(anchor_points, teacher_distances[image_index, point_index])
    _, giou = box_iou_pairs(student_boxes, teacher_boxes)
    box_weights = teacher_best[image_index, point_index]
    box_loss = ((1 - giou) * box_weights).sum() / box_weights.sum().clamp(min=1e-6)
    return score_loss + box_weight * box_loss


def load_teacher(checkpoint: str | Path, student_config) -> torch.nn.Module:
    """Loads a ``ubiq train`` checkpoint as a frozen teacher for ``student_config``.

    Args:
        checkpoint: The teacher's ``best.pt`` or ``last.pt``.
        student_config: The student's :class:`ubiq.models.toolchain.nets.ModelConfig`.

    Returns:
        The teacher in eval mode, its parameters frozen.

    Raises:
        ConfigError: If the teacher's task, classes (names and order) or input size
            differ from the student's, or the task cannot be distilled.
        ModelError: If the file is missing or not a ubiq checkpoint.
    """
    from ubiq.models.toolchain.export.onnx_export import load_checkpoint

    if student_config.task not in DISTILL_TASKS:
        raise ConfigError(
            f"teacher: distillation supports {' and '.join(DISTILL_TASKS)}, "
            f"not task {student_config.task}"
        )
    model, config, _ = load_checkpoint(checkpoint)
    if config.task != student_config.task:
        raise ConfigError(
            f"teacher {checkpoint} is a {config.task} model; the student is {student_config.task}"
        )
    if tuple(config.labels) != tuple(student_config.labels):
        raise ConfigError(
            f"teacher {checkpoint} has classes {_describe(config.labels)} but the data has "
            f"{_describe(student_config.labels)}; the teacher must know the same classes in "
            "the same order"
        )
    if tuple(config.imgsz) != tuple(student_config.imgsz):
        teacher_size = "x".join(str(v) for v in config.imgsz[::-1])
        student_size = "x".join(str(v) for v in student_config.imgsz[::-1])
        raise ConfigError(
            f"teacher {checkpoint} was trained at imgsz {teacher_size}; the student trains "
            f"at {student_size}: use the same imgsz"
        )
    model.requires_grad_(False)
    return model.eval()


def _describe(labels, limit: int = 8) -> str:
    shown = ", ".join(str(label) for label in list(labels)[:limit])
    more = f", ... ({len(labels)} in all)" if len(labels) > limit else ""
    return f"[{shown}{more}]"
