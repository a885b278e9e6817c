"""``ubiq train``: CPU training with validation each epoch, checkpoints, resume and plots.

One loop serves every task; a small task object knows its data, loss and metric:

- ``detect``: YOLO-layout data (``data.yaml``), quality focal + GIoU loss, mAP50 and
  mAP50-95 (COCO rules) on the ``val`` split, decoded by the runtime's own decoder.
- ``classify``: image folders, cross-entropy, top-1.
- ``segment``: YOLO-layout data with ``masks/``, cross-entropy per pixel, mIoU.
- ``kws``: keyword folders of WAV clips, log-mel features, DS-CNN, top-1 (see
  :mod:`ubiq.models.train.kws`).

Files under ``out``: ``weights/last.pt`` (every epoch), ``weights/best.pt`` (best
fitness), ``results.csv`` and ``results.png`` (curves). ``resume`` continues from
``last.pt`` with the stored options; the data order of epoch ``e`` depends only on
``seed + e``, so a resumed run follows the same course as an uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ubiq.errors import ConfigError, UbiqError
from ubiq.models.compress.distill import (
    DISTILL_TASKS,
    DistillOptions,
    detection_kd_loss,
    load_teacher,
    logit_kd_loss,
)
from ubiq.models.nets import ModelConfig, build_model
from ubiq.models.train.data import ClassifyData, DetectData, SegmentData, to_float

__all__ = ["TrainOptions", "TrainResult", "TrainingInterrupted", "train"]

log = logging.getLogger(__name__)


_TASK_NAMES = ("detect", "classify", "segment", "kws")


class TrainingInterrupted(UbiqError):
    """The run was stopped; ``last.pt`` holds the last completed epoch."""

    exit_code = 130


@dataclass
class TrainOptions:
    """Options of a training run (stored in every checkpoint).

    Attributes:
        task: ``detect``, ``classify``, ``segment`` or ``kws``.
        data: ``data.yaml`` (detect, segment), an image-folder root (classify) or a
            keyword folder of 16 kHz WAV clips (kws, see ``ubiq data keywords``).
        out: Output folder.
        backbone: Backbone name; ``auto`` is ``mobilenet_v2`` (``dscnn`` for kws).
        width: Backbone width multiplier.
        epochs: Epochs to train.
        imgsz: Square input size in pixels (a multiple of 32); unused by ``kws``, whose
            input is 1 s of log-mel features (40 x 98).
        batch: Images per step.
        lr: Peak learning rate of AdamW (cosine decay after a linear warm-up).
        weight_decay: AdamW weight decay.
        seed: Seed of the weights and of the data order.
        threads: Torch CPU threads (default: all cores).
        progress: Show progress bars.
        teacher: Checkpoint of a teacher to distill from (``detect``, ``classify``); a
            resumed run reloads it from here.
        kd_weight: Factor of the distillation loss (with ``teacher``).
        kd_temperature: Softening temperature of the distillation loss (with ``teacher``).
    """

    task: str
    data: str
    out: str
    backbone: str = "auto"
    width: float = 1.0
    epochs: int = 30
    imgsz: int = 320
    batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.05
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    teacher: str | None = None
    kd_weight: float = 1.0
    kd_temperature: float = 4.0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raises ConfigError naming the first bad option."""
        if self.task not in _TASK_NAMES:
            raise ConfigError(f"--task {self.task!r} is not one of {', '.join(_TASK_NAMES)}")
        for name in ("epochs", "imgsz", "batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if not Path(self.data).exists():
            raise ConfigError(f"--data {self.data} does not exist")
        DistillOptions(self.kd_weight, self.kd_temperature)  # raises for a bad value
        if self.teacher is not None and not Path(self.teacher).is_file():
            raise ConfigError(f"--teacher {self.teacher} does not exist")


@dataclass
class TrainResult:
    """What a finished run produced."""

    out: Path
    best: Path
    last: Path
    epochs: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    seconds: float


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
        from ubiq.models.train.detect_loss import DetectionLoss

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
        from ubiq.models.train.metrics import MapAccumulator

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
        from ubiq.models.train.metrics import top1_accuracy

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
        from ubiq.models.train.metrics import mean_iou

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
    from ubiq.models.train.kws import KwsTask

    return KwsTask(options)


_TASKS = {
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


def _schedule(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _options_from(data: dict[str, Any]) -> TrainOptions:
    known = {f.name for f in fields(TrainOptions)}
    return TrainOptions(**{k: v for k, v in data.items() if k in known})


def train(
    options: TrainOptions,
    resume: bool = False,
    *,
    model: torch.nn.Module | None = None,
    teacher: torch.nn.Module | None = None,
) -> TrainResult:
    """Trains (or resumes) a model; see the module docstring for the files written.

    Args:
        options: Run options. With ``resume``, only ``out`` and ``progress`` are read;
            the rest comes from ``out/weights/last.pt``.
        resume: Continue the run in ``options.out``.
        model: Train this module instead of building one from the config (a pruned model,
            whose layers no config describes, or pretrained weights). The checkpoints
            then carry the whole module (``"module"``) besides its state.
        teacher: A frozen teacher for knowledge distillation (``detect``, ``classify``);
            the task adds ``kd_weight`` times its distillation loss (see
            :mod:`ubiq.models.compress.distill`). Without it, ``options.teacher`` (a
            checkpoint path, kept in the run's checkpoints) is loaded, so a resumed run
            distills from the same teacher.

    Raises:
        ConfigError: For a bad option, backbone name or image size, or a teacher whose
            task, classes or image size differ from the student's.
        ModelError: For a teacher checkpoint that cannot be read.
        DatasetError: For a malformed dataset.
        TrainingInterrupted: On Ctrl-C; ``last.pt`` keeps the last completed epoch.
    """
    out = Path(options.out)
    weights = out / "weights"
    checkpoint = None
    if resume:
        last = weights / "last.pt"
        if not last.is_file():
            raise ConfigError(f"--resume: no checkpoint at {last}")
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        progress = options.progress
        options = _options_from(checkpoint["options"])
        options.progress = progress
    options.check()
    torch.set_num_threads(options.threads or os.cpu_count() or 1)
    torch.manual_seed(options.seed)
    if (teacher is not None or options.teacher) and options.task not in DISTILL_TASKS:
        raise ConfigError(f"--teacher: --task {options.task} cannot be distilled")
    task = _TASKS[options.task](options)
    config = task.config(options)
    if teacher is None and options.teacher:
        teacher = load_teacher(options.teacher, config)
    carries_module = model is not None or (checkpoint is not None and "module" in checkpoint)
    if checkpoint is not None and "module" in checkpoint:
        model = checkpoint["module"]
    elif model is None:
        model = build_model(config)
    model = model.to(memory_format=torch.channels_last)
    task.setup(model)
    task.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
    steps_per_epoch = max(1, len(task.train) // options.batch)
    total_steps = steps_per_epoch * options.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.lr, weight_decay=options.weight_decay
    )
    warmup = min(steps_per_epoch * 2, max(1, total_steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps, warmup))
    start_epoch, best_fitness, history, elapsed = 0, -1.0, [], 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch = int(checkpoint["epoch"])
        best_fitness = float(checkpoint["best_fitness"])
        history = list(checkpoint["history"])
        elapsed = float(checkpoint.get("seconds", 0.0))
        torch.set_rng_state(checkpoint["torch_rng"])
        log.info("resuming %s at epoch %d/%d", out, start_epoch + 1, options.epochs)
    weights.mkdir(parents=True, exist_ok=True)
    run = _Run(
        options,
        task,
        model,
        optimizer,
        scheduler,
        config,
        history,
        best_fitness,
        elapsed,
        steps_per_epoch,
        weights,
        out,
        carries_module,
    )
    for epoch in range(start_epoch, options.epochs):
        try:
            run.epoch(epoch)
        except KeyboardInterrupt as interrupt:
            raise TrainingInterrupted(
                f"stopped in epoch {epoch + 1}/{options.epochs}; {weights / 'last.pt'} holds "
                f"epoch {len(history)}; continue with: ubiq train --resume --out {out}"
            ) from interrupt
    elapsed = run.elapsed
    final = torch.load(weights / "best.pt", map_location="cpu", weights_only=False)
    return TrainResult(
        out=out,
        best=weights / "best.pt",
        last=weights / "last.pt",
        epochs=options.epochs,
        metrics=dict(final["metrics"]),
        history=history,
        seconds=elapsed,
    )


@dataclass
class _Run:
    """The state of a run that one epoch advances."""

    options: TrainOptions
    task: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: ModelConfig
    history: list[dict[str, float]]
    best_fitness: float
    elapsed: float
    steps_per_epoch: int
    weights: Path
    out: Path
    carries_module: bool = False

    def epoch(self, epoch: int) -> None:
        """Trains, validates and checkpoints one epoch."""
        started = time.perf_counter()
        rng = np.random.default_rng(self.options.seed + epoch)
        order = rng.permutation(len(self.task.train))
        self.model.train()
        sums: dict[str, float] = {}
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{self.options.epochs}",
            disable=not self.options.progress,
            leave=False,
        )
        try:
            for step in bar:
                indices = order[step * self.options.batch : (step + 1) * self.options.batch]
                loss, parts = self.task.step(self.model, indices, rng)
                if not torch.isfinite(loss):
                    raise UbiqError(f"loss became {float(loss)} at epoch {epoch + 1}; lower --lr")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
                self.optimizer.step()
                self.scheduler.step()
                parts = {"loss": float(loss.detach()), **parts}
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.set_postfix({k: f"{v / (step + 1):.3f}" for k, v in sums.items()})
        finally:
            bar.close()
        self.model.eval()
        metrics = self.task.validate(self.model, self.options.batch * 2)
        self.elapsed += time.perf_counter() - started
        row = {"epoch": epoch + 1}
        row.update({f"train_{k}": v / self.steps_per_epoch for k, v in sums.items()})
        row.update({f"val_{k}": float(v) for k, v in metrics.items()})
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["seconds"] = self.elapsed
        self.history.append(row)
        fitness = self.task.fitness(metrics)
        improved = fitness > self.best_fitness
        self.best_fitness = max(self.best_fitness, fitness)
        state = {
            "config": self.config.to_dict(),
            "options": asdict(self.options),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch + 1,
            "best_fitness": self.best_fitness,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "history": self.history,
            "seconds": self.elapsed,
            "torch_rng": torch.get_rng_state(),
        }
        if self.carries_module:
            state["module"] = self.model
        # best.pt first: a run stopped between the two saves resumes from a last.pt whose
        # best.pt is already on disk.
        if improved:
            _atomic_save(state, self.weights / "best.pt")
        _atomic_save(state, self.weights / "last.pt")
        _write_results(self.out, self.history)
        summary = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        log.warning(
            "epoch %d/%d  loss %.3f  %s  (%.0f s)",
            epoch + 1,
            self.options.epochs,
            row.get("train_loss", float("nan")),
            summary,
            self.elapsed,
        )


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    partial = path.with_suffix(".pt.partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _write_results(out: Path, history: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    try:
        _plot(out / "results.png", history)
    except ImportError:
        log.info("matplotlib is not installed; no results.png")


def _plot(path: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    train_keys = [k for k in history[-1] if k.startswith("train_")]
    val_keys = [k for k in history[-1] if k.startswith("val_")]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in train_keys:
        left.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=key[6:])
    left.set_title("training loss")
    left.set_xlabel("epoch")
    left.legend()
    for key in val_keys:
        right.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", label=key[4:])
    right.set_title("validation")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
