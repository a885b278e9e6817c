"""``ubiq train``: CPU training with validation each epoch, checkpoints, resume and plots.

One loop serves every task; a small task object knows its data, loss and metric:

- ``detect``: YOLO-layout data (``data.yaml``), quality focal + GIoU loss, mAP50 and
  mAP50-95 (COCO rules) on the ``val`` split, decoded by the runtime's own decoder.
- ``classify``: image folders, cross-entropy, top-1.
- ``segment``: YOLO-layout data with ``masks/``, cross-entropy per pixel, mIoU.
- ``kws``: keyword folders of WAV clips, log-mel features, DS-CNN, top-1 (see
  :mod:`ubiq.models.toolchain.train.kws`).

The image tasks and the registry are in :mod:`ubiq.models.toolchain.train.tasks`.

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
from tqdm import tqdm

from ubiq.errors import ConfigError, UbiqError
from ubiq.models.toolchain.compress.distill import DISTILL_TASKS, DistillOptions, load_teacher
from ubiq.models.toolchain.nets import ModelConfig, build_model
from ubiq.models.toolchain.train.tasks import TASKS, decode_predictions

__all__ = ["TrainOptions", "TrainResult", "TrainingInterrupted", "decode_predictions", "train"]

log = logging.getLogger(__name__)


_TASK_NAMES = ("detect", "classify", "segment", "kws")
_TASKS = TASKS  # the registry under its former name here (tests/models/test_kws.py looks in it)


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
            raise ConfigError(f"task {self.task!r} is not one of {', '.join(_TASK_NAMES)}")
        for name in ("epochs", "imgsz", "batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not Path(self.data).exists():
            raise ConfigError(f"data {self.data} does not exist")
        DistillOptions(self.kd_weight, self.kd_temperature)  # raises for a bad value
        if self.teacher is not None and not Path(self.teacher).is_file():
            raise ConfigError(f"teacher {self.teacher} does not exist")


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
    extra: dict[str, Any] = field(default_factory=dict)
    """The best weights' config extras (a command model's ``threshold`` and rule)."""


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
            :mod:`ubiq.models.toolchain.compress.distill`). Without it, ``options.teacher`` (a
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
            raise ConfigError(f"resume: no checkpoint at {last}")
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
        progress = options.progress
        options = _options_from(checkpoint["options"])
        options.progress = progress
    options.check()
    torch.set_num_threads(options.threads or os.cpu_count() or 1)
    torch.manual_seed(options.seed)
    if (teacher is not None or options.teacher) and options.task not in DISTILL_TASKS:
        raise ConfigError(f"teacher: task {options.task} cannot be distilled")
    task = TASKS[options.task](options)
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
    if hasattr(task, "finish") and "finished" not in final:
        final = _finish(task, final, model, weights / "best.pt", options.batch * 2)
    return TrainResult(
        out=out,
        best=weights / "best.pt",
        last=weights / "last.pt",
        epochs=options.epochs,
        metrics=dict(final["metrics"]),
        history=history,
        seconds=elapsed,
        extra=dict(final["config"].get("extra") or {}),
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
                    raise UbiqError(f"loss became {float(loss)} at epoch {epoch + 1}; lower lr")
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


def _finish(task: Any, best: dict[str, Any], model: torch.nn.Module, path: Path, batch: int):
    """Lets the task add config entries computed from the best weights (a command model's
    threshold) and saves them into ``best.pt``, once."""
    module = best.get("module", model)
    module.load_state_dict(best["model"])
    extra = task.finish(module.eval(), batch)
    best = dict(best, finished=True)
    if extra:
        config = dict(best["config"])
        config["extra"] = {**dict(config.get("extra") or {}), **extra}
        best["config"] = config
    _atomic_save(best, path)
    return best


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
