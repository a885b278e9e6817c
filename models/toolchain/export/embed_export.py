"""Export of a ``ubiq train`` checkpoint's backbone as an embedder: one vector per image.

``ubiq export CKPT --format onnx --task embed`` writes the image backbone of any image
checkpoint (classifier, detector, segmenter), followed by global average pooling, as an
ONNX model whose output ``embedding`` is ``(1, D)``, with a manifest of task ``embed``.
A classifier keeps its head's 1x1 expansion (the features its linear layer was trained
on, ``D`` = 256); detectors and segmenters pool the backbone's last (stride-32) features.
``ubiq learn --embedder`` builds few-shot classifiers on it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ubiq.errors import ConfigError, ModelError
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest
from ubiq.models.toolchain.export.onnx_export import (
    OPSET,
    ExportResult,
    load_checkpoint,
    write_manifest,
)

__all__ = ["EmbeddingModule", "export_embedder"]


class EmbeddingModule(nn.Module):
    """A trained model's backbone and pooling: ``(N, 3, H, W) -> (N, D)``."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        if task == "kws" or not hasattr(model, "backbone"):
            raise ConfigError(
                f"--task embed exports image backbones; this checkpoint is a {task!r} model"
            )
        self.backbone = model.backbone
        head = getattr(model, "head", None)
        self.expand = head.expand if task == "classify" else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.expand(self.backbone(x)[-1])).flatten(1)


def export_embedder(
    checkpoint: str | Path, out: str | Path | None = None, *, tolerance: float = 1e-4
) -> ExportResult:
    """Exports a checkpoint's backbone as an ONNX embedder with its manifest, checked
    against torch on random inputs.

    Args:
        checkpoint: A ``ubiq train`` checkpoint of an image task.
        out: The ``.onnx`` path (default: ``embedder.onnx`` beside the checkpoint's run).
        tolerance: Largest allowed absolute difference between torch and onnxruntime.

    Raises:
        ConfigError: If the checkpoint is a keyword model.
        ModelError: If the export differs from torch beyond ``tolerance``.
    """
    import onnxruntime as ort

    from ubiq.models.toolchain.train.data import image_preprocess

    model, config, _ = load_checkpoint(checkpoint)
    module = EmbeddingModule(model, config.task).eval()
    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.parent.parent / "embedder.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = config.imgsz
    example = torch.rand(1, config.in_channels, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        dim = int(module(example).shape[1])
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=["images"],
            output_names=["embedding"],
            opset_version=OPSET,
            dynamo=False,
        )
    manifest = ModelManifest(
        name=out.stem,
        task="embed",
        format="onnx",
        input=InputSpec(name="images", shape=(1, config.in_channels, height, width)),
        preprocess=image_preprocess(config.imgsz, "stretch"),
        decoder=DecoderSpec("embedding", {"dim": dim, "backbone": config.backbone}),
        license="Apache-2.0",
        source=f"ubiq export --task embed {checkpoint.resolve()} ({config.task} checkpoint)",
    )
    manifest_path = write_manifest(out, manifest)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for _ in range(2):
            tensor = torch.rand(1, config.in_channels, height, width, generator=generator)
            expected = module(tensor).numpy()
            (actual,) = session.run(None, {"images": tensor.numpy()})
            worst = max(worst, float(np.abs(expected - actual).max()))
    if worst > tolerance:
        raise ModelError(f"ONNX export {out} differs from torch by {worst:.2e} (> {tolerance:.0e})")
    return ExportResult(out, manifest_path, manifest, worst, (f"embedding {dim} values",))
