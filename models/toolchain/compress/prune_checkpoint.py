"""Prune a ``ubiq train`` checkpoint and fine-tune it into a new run folder.

```python
result = prune_checkpoint("runs/det/weights/best.pt", "runs/det-pruned", target_macs_ratio=0.5)
result.checkpoint, result.macs_after / result.macs_before, result.metrics
```

The pruning itself is :func:`ubiq.models.toolchain.compress.prune.prune_structured`.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ubiq.errors import ConfigError
from ubiq.models.toolchain.compress.prune import PruneResult, _check_ratio, prune_structured

__all__ = ["PruneCheckpointResult", "prune_checkpoint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneCheckpointResult:
    """What :func:`prune_checkpoint` wrote and measured.

    Attributes:
        checkpoint: The fine-tuned ``weights/best.pt`` (carries the whole module).
        out: The run folder.
        macs_before: MACs of the input checkpoint's model at its image size.
        macs_after: MACs of the pruned model.
        params_before: Parameters of the input model.
        params_after: Parameters of the pruned model.
        metrics_before: Validation metrics stored in the input checkpoint.
        metrics: Validation metrics of ``checkpoint`` (empty without fine-tuning).
        prune: The structured pruning result (its model is the pruned, not fine-tuned one).
        seconds: Fine-tuning time.
        report: ``prune.json`` in ``out``.
        history: Per-epoch rows of the fine-tuning run.
    """

    checkpoint: Path
    out: Path
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    metrics_before: dict[str, float]
    metrics: dict[str, float]
    prune: PruneResult
    seconds: float
    report: Path
    history: list[dict[str, float]] = field(default_factory=list)


def _check_labels(task: str, data: str, labels: Sequence[str]) -> None:
    """Fails early when the fine-tuning data has other classes than the model."""
    path = Path(data)
    if task == "detect" and path.is_file():
        from ubiq.models.datasets.yolo import load_yolo_split

        names = list(load_yolo_split(path, "train").names)
    elif task == "classify" and path.is_dir():
        from ubiq.models.datasets.classify import load_image_folder

        names = list(load_image_folder(path, "train")[2])
    else:
        return
    if names != list(labels):
        raise ConfigError(
            f"data {data} has classes {names}, but the checkpoint was trained on {list(labels)}"
        )


def prune_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    target_macs_ratio: float = 0.5,
    data: str | Path | None = None,
    finetune_epochs: int = 4,
    lr: float = 1e-3,
    threads: int | None = None,
    progress: bool = True,
    round_to: int = 8,
    importance: str = "magnitude",
    iterative_steps: int = 5,
    distill: bool = False,
) -> PruneCheckpointResult:
    """Prunes a ``ubiq train`` checkpoint, fine-tunes it and writes a new run folder.

    ``out_dir`` gets what ``ubiq train`` writes (``weights/best.pt`` and ``last.pt`` carrying
    the whole pruned module, ``results.csv``) and ``prune.json`` (MACs, parameters, metrics
    and the changed layers). ``ubiq export`` and :func:`~ubiq.models.toolchain.export.onnx_export.
    export_onnx` read the checkpoint as they read any other.

    Args:
        checkpoint: The checkpoint to prune (``best.pt``).
        out_dir: The new run folder.
        target_macs_ratio: MACs kept, in (0, 1).
        data: Fine-tuning data (default: the data the checkpoint was trained on).
        finetune_epochs: Epochs of fine-tuning; 0 writes the pruned weights as they are.
        lr: Peak fine-tuning learning rate.
        threads: Torch CPU threads while fine-tuning (default: all cores).
        progress: Show progress bars.
        round_to: Channel counts are multiples of this.
        importance: Channel ranking, one of :data:`IMPORTANCES`.
        iterative_steps: Pruning steps.
        distill: Fine-tune with the unpruned model as a knowledge-distillation teacher
            (see :mod:`ubiq.models.toolchain.compress.distill`).

    Returns:
        The fine-tuned checkpoint, MACs and parameters before and after, and the metrics.

    Raises:
        ConfigError: For a bad ratio or option, or data with other classes.
        ModelError: If the checkpoint cannot be read.
    """
    from ubiq.models.toolchain.export.onnx_export import load_checkpoint
    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    target_macs_ratio = _check_ratio("target_macs_ratio", target_macs_ratio)
    if int(finetune_epochs) < 0:
        raise ConfigError(f"finetune_epochs must be 0 or more, got {finetune_epochs}")
    model, config, state = load_checkpoint(checkpoint)
    if hasattr(model, "export_mode"):
        model.export_mode = False  # train and trace the training outputs
    stored = dict(state.get("options") or {})
    data = str(data) if data is not None else stored.get("data")
    if not data:
        raise ConfigError(f"{checkpoint} does not name its training data; pass data")
    out = Path(out_dir)
    options = TrainOptions(
        task=config.task,
        data=data,
        out=str(out),
        backbone=config.backbone,
        width=config.width,
        epochs=max(1, int(finetune_epochs)),
        imgsz=int(config.imgsz[0]),
        batch=int(stored.get("batch", 16)),
        lr=float(lr),
        weight_decay=float(stored.get("weight_decay", 0.05)),
        seed=int(stored.get("seed", 0)),
        threads=threads,
        progress=progress,
    )
    options.check()
    _check_labels(config.task, data, config.labels)
    if threads:
        torch.set_num_threads(int(threads))
    input_shape = (1, config.in_channels, *config.imgsz)
    result = prune_structured(
        model,
        input_shape,
        target_macs_ratio=target_macs_ratio,
        round_to=round_to,
        importance=importance,
        iterative_steps=iterative_steps,
    )
    history: list[dict[str, float]] = []
    if finetune_epochs > 0:
        teacher = model if distill else None  # prune_structured left ``model`` unchanged
        trained = train(options, model=copy.deepcopy(result.model), teacher=teacher)
        best, metrics, seconds = trained.best, trained.metrics, trained.seconds
        history = trained.history
    else:
        best, metrics, seconds = _save_pruned(result.model, config, options, out), {}, 0.0
    metrics_before = {k: float(v) for k, v in (state.get("metrics") or {}).items()}
    report = out / "prune.json"
    report.write_text(
        json.dumps(
            {
                "source": str(Path(checkpoint).resolve()),
                "target_macs_ratio": target_macs_ratio,
                "round_to": round_to,
                "importance": importance,
                "finetune_epochs": int(finetune_epochs),
                "distill": bool(distill),
                "metrics_before": metrics_before,
                "metrics": metrics,
                **result.to_dict(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    log.info("pruned %s -> %s: %s", checkpoint, best, result.summary(limit=0))
    return PruneCheckpointResult(
        best,
        out,
        result.macs_before,
        result.macs_after,
        result.params_before,
        result.params_after,
        metrics_before,
        metrics,
        result,
        seconds,
        report,
        history,
    )


def _save_pruned(model: nn.Module, config, options, out: Path) -> Path:
    """Writes an un-fine-tuned pruned model as a checkpoint ``load_checkpoint`` reads."""
    from dataclasses import asdict

    weights = out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    model.eval()
    state = {
        "config": config.to_dict(),
        "options": {**asdict(options), "epochs": 0},
        "model": model.state_dict(),
        "module": model,
        "epoch": 0,
        "metrics": {},
        "history": [],
    }
    path = weights / "best.pt"
    torch.save(state, path)
    return path
