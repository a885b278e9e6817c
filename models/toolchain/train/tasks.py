"""The tasks ``ubiq train`` runs: each knows its data, loss and metric.

A task has ``train`` and ``val`` data, ``names``, ``metric_names``, ``config(options)``,
``setup(model)``, ``step(model, indices, rng) -> (loss, parts)``, ``validate(model, batch)``
and ``fitness(metrics)``; a ``teacher`` set on it adds a distillation loss. :data:`TASKS`
maps ``--task`` to a task's factory; :mod:`ubiq.models.toolchain.train.trainer` runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ubiq.models.toolchain.compress.distill import DistillOptions, detection_kd_loss, logit_kd_loss
from ubiq.models.toolchain.nets import ModelConfig
from ubiq.models.toolchain.train.data import ClassifyData, DetectData, SegmentData, to_float

if TYPE_CHECKING:
    from ubiq.models.toolchain.train.trainer import TrainOptions

__all__ = ["TASKS", "decode_predictions"]


class _ImageTask:
    """What the image tasks share: both splits in memory, the config, no-op setup.

    Subclasses set ``task``, ``data_class`` and ``metric_names`` and define ``step``,
    ``validate`` and ``fitness``.
    """

    task = ""
    data_class: Any = None

    def __init__(self, options: TrainOptions) -> None:
        size = (options.imgsz, options.imgsz)
        load = self.data_class.load
        self.train = load(Path(options.data), "train", size, options.progress)
        self.val = load(Path(options.data), "val", size, options.progress)
        self.names = self.train.names
        self.teacher: torch.nn.Module | None = None
        self.distill = DistillOptions(options.kd_weight, options.kd_temperature)

    def config(self, options: TrainOptions) -> ModelConfig:
        return ModelConfig(
            task=self.task,
            backbone="mobilenet_v2" if options.backbone == "auto" else options.backbone,
            labels=tuple(self.names),
            width=options.width,
            imgsz=(options.imgsz, options.imgsz),
        )

    def setup(self, model) -> None:
        pass


class _DetectTask(_ImageTask):
    metric_names = ("map50", "map50_95", "precision", "recall")
    task = "detect"
    data_class = DetectData

    def setup(self, model) -> None:
        from ubiq.models.toolchain.train.detect_loss import DetectionLoss

        self.loss = DetectionLoss(len(self.names), model.strides)

    def step(self, model, indices: np.ndarray, rng: np.random.Generator):
        images, targets = self.train.batch(indices, flip=rng.random(len(indices)) < 0.5)
        inputs = to_float(images)
        outputs = model(inputs)
        loss, parts = self.loss(outputs, targets)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_outputs = self.teacher(inputs)
            kd = detection_kd_loss(outputs, teacher_outputs, temperature=self.distill.temperature)
            loss = loss + self.distill.weight * kd
            parts = {**parts, "kd": float(kd.detach())}
        return loss, parts

    @torch.no_grad()
    def validate(self, model, batch: int) -> dict[str, float]:
        from ubiq.models.runtime.metrics import MapAccumulator

        accumulator = MapAccumulator()
        for start in range(0, len(self.val), batch):
            indices = np.arange(start, min(start + batch, len(self.val)))
            images, targets = self.val.batch(indices)
            predictions = model.predict(to_float(images)).numpy()
            for row, (boxes, class_ids) in enumerate(targets):
                raw = decode_predictions(predictions[row : row + 1], images.shape[-2:])
                accumulator.add(
                    raw.xyxy, raw.confidence, raw.class_id, boxes.numpy(), class_ids.numpy()
                )
        metrics = accumulator.compute()
        return {
            "map50": metrics.map50,
            "map50_95": metrics.map50_95,
            "precision": metrics.precision,
            "recall": metrics.recall,
        }

    @staticmethod
    def fitness(metrics: dict[str, float]) -> float:
        return 0.1 * metrics["map50"] + 0.9 * metrics["map50_95"]


def decode_predictions(
    prediction: np.ndarray,
    size: tuple[int, int],
    confidence_threshold: float = 0.001,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
):
    """Decodes one ``(1, 4 + K, A)`` export-form prediction (normalized boxes) with the
    runtime's decoder; boxes come back in input pixels."""
    from ubiq.models.runtime.decoders import DecodeOptions
    from ubiq.models.runtime.decoders.yolo import decode_yolo

    options = DecodeOptions(
        input_width=int(size[1]),
        input_height=int(size[0]),
        confidence_threshold=confidence_threshold,
        iou_threshold=iou_threshold,
        class_ids=None,
        max_detections=max_detections,
        params={"num_classes": int(prediction.shape[1] - 4), "normalized": True},
        output_names=("output0",),
    )
    return decode_yolo([prediction], options)


class _ClassifyTask(_ImageTask):
    metric_names = ("top1",)
    task = "classify"
    data_class = ClassifyData

    def step(self, model, indices: np.ndarray, rng: np.random.Generator):
        images = torch.from_numpy(self.train.images[indices])
        images = _random_shift(images, rng, fraction=0.1)
        labels = torch.from_numpy(self.train.labels[indices])
        inputs = to_float(images)
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        parts = {"ce": float(loss.detach())}
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)
            kd = logit_kd_loss(logits, teacher_logits, self.distill.temperature)
            loss = loss + self.distill.weight * kd
            parts["kd"] = float(kd.detach())
        return loss, parts

    @torch.no_grad()
    def validate(self, model, batch: int) -> dict[str, float]:
        from ubiq.models.runtime.metrics import top1_accuracy

        logits = [
            model(to_float(torch.from_numpy(self.val.images[s : s + batch]))).numpy()
            for s in range(0, len(self.val), batch)
        ]
        return {"top1": top1_accuracy(np.concatenate(logits), self.val.labels)}

    @staticmethod
    def fitness(metrics: dict[str, float]) -> float:
        return metrics["top1"]


class _SegmentTask(_ImageTask):
    metric_names = ("miou",)
    task = "segment"
    data_class = SegmentData

    def step(self, model, indices: np.ndarray, rng: np.random.Generator):
        images = self.train.images[indices].copy()
        masks = self.train.masks[indices].copy()
        flip = rng.random(len(indices)) < 0.5
        images[flip] = images[flip][..., ::-1]
        masks[flip] = masks[flip][..., ::-1]
        logits = model(to_float(torch.from_numpy(images)))
        loss = F.cross_entropy(logits, torch.from_numpy(masks))
        return loss, {"ce": float(loss.detach())}

    @torch.no_grad()
    def validate(self, model, batch: int) -> dict[str, float]:
        from ubiq.models.runtime.metrics import mean_iou

        predictions = [
            model(to_float(torch.from_numpy(self.val.images[s : s + batch]))).argmax(1).numpy()
            for s in range(0, len(self.val), batch)
        ]
        miou, _ = mean_iou(np.concatenate(predictions), self.val.masks, len(self.names))
        return {"miou": float(miou)}

    @staticmethod
    def fitness(metrics: dict[str, float]) -> float:
        return metrics["miou"]


def _kws_task(options: TrainOptions):
    from ubiq.models.toolchain.train.kws import KwsTask

    return KwsTask(options)


TASKS = {
    "detect": _DetectTask,
    "classify": _ClassifyTask,
    "segment": _SegmentTask,
    "kws": _kws_task,
}


def _random_shift(images: torch.Tensor, rng: np.random.Generator, fraction: float):
    """Shifts each image by up to ``fraction`` of its size, filling with 114 (grey)."""
    height, width = images.shape[-2:]
    out = torch.full_like(images, 114)
    for row in range(images.shape[0]):
        dy = int(rng.integers(-int(height * fraction), int(height * fraction) + 1))
        dx = int(rng.integers(-int(width * fraction), int(width * fraction) + 1))
        src_y = slice(max(0, -dy), height - max(0, dy))
        src_x = slice(max(0, -dx), width - max(0, dx))
        dst_y = slice(max(0, dy), height - max(0, -dy))
        dst_x = slice(max(0, dx), width - max(0, -dx))
        out[row, :, dst_y, dst_x] = images[row, :, src_y, src_x]
    return out
