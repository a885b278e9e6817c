"""Export of a ``ubiq train`` checkpoint to ONNX with its manifest, checked against torch.

The manifest (labels, preprocessing, decoder) is embedded in the ONNX metadata under
``ubiq.manifest`` and written beside the file as ``NAME.json``, so ``ubiq detect --model
NAME.onnx`` runs it with nothing else. Detectors export in the Ultralytics layout
``(1, 4 + K, A)`` read by the runtime's ``yolo`` decoder.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ubiq.errors import ModelError
from ubiq.manifest import (
    MANIFEST_METADATA_KEY,
    DecoderSpec,
    InputSpec,
    ModelManifest,
    Preprocess,
    manifest_path_for,
)
from ubiq.models.toolchain.nets import ModelConfig, build_model

__all__ = ["ExportResult", "export_onnx", "load_checkpoint", "manifest_for", "write_manifest"]

log = logging.getLogger(__name__)
OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how closely it matches torch."""

    path: Path
    manifest_path: Path
    manifest: ModelManifest
    max_abs_diff: float
    notes: tuple[str, ...] = ()


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Rebuilds the model of a ``ubiq train`` checkpoint in eval mode.

    Raises:
        ModelError: If the file is missing, unreadable or not a ubiq checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ModelError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "model" not in checkpoint:
        raise ModelError(f"{path} is not a ubiq checkpoint (no config and model state)")
    config = ModelConfig.from_dict(checkpoint["config"])
    # A pruned model's layers differ from what its config builds: it travels whole.
    model = checkpoint["module"] if "module" in checkpoint else build_model(config)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, config, checkpoint


def manifest_for(config: ModelConfig, name: str, source: str) -> ModelManifest:
    """The manifest of an exported ``config`` model."""
    from ubiq.models.toolchain.train.data import image_preprocess

    height, width = config.imgsz
    resize = "stretch" if config.task == "classify" else "letterbox"
    preprocess = image_preprocess(config.imgsz, resize)
    if config.task == "kws":
        # Not an image: the input is log-mel features, whose settings travel in the
        # decoder params; the image fields say "no resize, no scaling".
        preprocess = Preprocess(
            width=width, height=height, resize="stretch", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )
    decoders = {
        "detect": DecoderSpec("yolo", {"num_classes": config.num_classes, "normalized": True}),
        "classify": DecoderSpec("softmax", {}),
        "segment": DecoderSpec("mask", {"background": 0}),
        "kws": DecoderSpec("softmax", _kws_params(config)),
    }
    return ModelManifest(
        name=name,
        task=config.task,
        format="onnx",
        input=InputSpec(
            name=input_name(config), shape=(1, config.in_channels, height, width), layout="NCHW"
        ),
        preprocess=preprocess,
        decoder=decoders[config.task],
        labels=config.labels,
        license="Apache-2.0",
        source=source,
    )


def _kws_params(config: ModelConfig) -> dict:
    """A keyword model's decoder params: its feature settings and, when training chose one,
    its threshold (and the phone check's and the phone recogniser's) with the rule and the
    table it came from."""
    params = {"features": dict(config.extra.get("features", {}))}
    for key in (
        "threshold",
        "verify_threshold",
        "phone_threshold",
        "threshold_chosen",
        "phone_threshold_chosen",
        "calibration",
    ):
        if key in config.extra:
            params[key] = config.extra[key]
    return params


def write_manifest(path: Path, manifest: ModelManifest) -> Path:
    """Embeds ``manifest`` in the ONNX file's metadata (``ubiq.manifest``, replacing any
    metadata) and writes it beside the file; returns the sidecar's path."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = MANIFEST_METADATA_KEY, manifest.to_json()
    onnx.save(proto, str(path))
    return manifest.save(manifest_path_for(path))


def input_name(config: ModelConfig) -> str:
    """The input tensor's name: ``features`` for keyword spotters, else ``images``."""
    return "features" if config.task == "kws" else "images"


def _export_module(model: torch.nn.Module) -> torch.nn.Module:
    if hasattr(model, "export_mode"):
        model.export_mode = True
    return model


def export_onnx(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    check_images: np.ndarray | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Exports a checkpoint to ONNX, embeds and writes its manifest, and checks it.

    Args:
        checkpoint: A ``ubiq train`` checkpoint (``best.pt`` or ``last.pt``).
        out: The ``.onnx`` path (default: ``model.onnx`` beside the checkpoint's run).
        check_images: Optional ``(N, C, H, W)`` float inputs to compare on; random inputs
            are used as well.
        tolerance: Largest allowed absolute difference between torch and onnxruntime.

    Returns:
        The paths, the manifest and the largest difference from torch.

    Raises:
        ModelError: If the export fails or differs from torch beyond ``tolerance``.
    """
    import onnxruntime as ort

    model, config, state = load_checkpoint(checkpoint)
    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.parent.parent / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = config.imgsz
    example = torch.rand(1, config.in_channels, height, width)
    module = _export_module(model)
    output_name = "output0" if config.task == "detect" else "logits"
    with torch.no_grad(), warnings.catch_warnings():
        # The neck's size check is a Python branch the tracer fixes for this input size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        reference_fn = model.predict if config.task == "detect" else model
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=[input_name(config)],
            output_names=[output_name],
            opset_version=OPSET,
            dynamo=False,
        )
    manifest = manifest_for(config, out.stem, f"ubiq train {checkpoint.resolve()}")
    manifest_path = write_manifest(out, manifest)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, config.in_channels, height, width, generator=generator)]
    if check_images is not None:
        inputs += [torch.from_numpy(np.asarray(x, np.float32))[None] for x in check_images]
    worst = 0.0
    with torch.no_grad():
        for tensor in inputs:
            expected = reference_fn(tensor).numpy()
            (actual,) = session.run(None, {input_name(config): tensor.numpy()})
            worst = max(worst, float(np.abs(expected - actual).max()))
    if worst > tolerance:
        raise ModelError(f"ONNX export {out} differs from torch by {worst:.2e} (> {tolerance:.0e})")
    log.info("exported %s (max |onnx - torch| %.2e)", out, worst)
    metrics = state.get("metrics", {})
    notes = tuple(f"{k} {v:.4f}" for k, v in metrics.items())
    return ExportResult(out, manifest_path, manifest, worst, notes)
