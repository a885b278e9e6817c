"""Adapter between Ultralytics YOLO and ubiq manifests.

Ultralytics is AGPL-3.0 and optional (``pip install 'ubiq[yolo]'``). Only
:func:`export_ultralytics` imports it, lazily, when called. Reading the metadata that an
Ultralytics ONNX export embeds (``names``, ``imgsz``, ``stride``, ``task``) and turning it
into a :class:`~ubiq.manifest.ModelManifest` needs onnxruntime alone, so the runtime can run
any Ultralytics ONNX export without Ultralytics installed.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError, ModelError
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess, manifest_path_for
from ubiq.paths import file_sha256

logger = logging.getLogger(__name__)

YOLO_INSTALL_HINT = "pip install 'ubiq[yolo]'"
DEFAULT_LICENSE = "AGPL-3.0"
# What Ultralytics raises on a failed download (ConnectionError is an OSError), a bad yaml
# or weights file, a failed trace or export (RuntimeError, AssertionError from its checks).
_ULTRALYTICS_ERRORS = (OSError, RuntimeError, ValueError, TypeError, KeyError, AssertionError)


def _literal(metadata: Mapping[str, str], key: str) -> Any:
    if key not in metadata:
        raise ModelError(
            f"Ultralytics metadata has no {key!r} key (keys: {', '.join(sorted(metadata))})"
        )
    text = metadata[key]
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise ModelError(
            f"Ultralytics metadata {key!r} is not a Python literal: {text!r}"
        ) from error


def _labels(names: Any) -> tuple[str, ...]:
    if isinstance(names, (list, tuple)):
        return tuple(str(v) for v in names)
    if not isinstance(names, dict) or not names:
        raise ModelError(f"Ultralytics metadata 'names' must be a non-empty dict, got {names!r}")
    try:
        by_id = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError) as error:
        raise ModelError(f"Ultralytics metadata 'names' has a non-integer id: {names!r}") from error
    if min(by_id) < 0:
        raise ModelError(f"Ultralytics metadata 'names' has a negative id: {min(by_id)}")
    return tuple(by_id.get(i, f"class_{i}") for i in range(max(by_id) + 1))


def _image_size(value: Any) -> tuple[int, int]:
    """Returns (height, width) from an ``imgsz`` value (an int or ``[h, w]``)."""
    if isinstance(value, int):
        value = [value, value]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise ModelError(f"Ultralytics metadata 'imgsz' must be [height, width], got {value!r}")
    return int(value[0]), int(value[1])


def _license(metadata: Mapping[str, str]) -> str:
    text = str(metadata.get("license", "")).strip()
    return text.split()[0] if text else DEFAULT_LICENSE


def _default_name(metadata: Mapping[str, str]) -> str:
    text = str(metadata.get("description", "")).strip()
    text = text.removeprefix("Ultralytics").strip().removesuffix("model").strip()
    return text.split()[0].lower() if text else "ultralytics"


def manifest_from_ultralytics_metadata(
    metadata: Mapping[str, str],
    input_name: str,
    input_shape: Sequence[Any],
    *,
    name: str | None = None,
    license: str | None = None,
    source: str = "",
    sha256: str = "",
) -> ModelManifest:
    """Builds a manifest from the metadata an Ultralytics ONNX export embeds.

    Args:
        metadata: The ONNX custom metadata map, values as strings (``names`` is a Python
            dict literal such as ``"{0: 'person', 1: 'bicycle'}"``, ``imgsz`` a list literal
            such as ``"[640, 640]"``, ``task`` such as ``"detect"``).
        input_name: Name of the model's image input tensor, such as ``"images"``.
        input_shape: Its shape ``(N, C, H, W)``; symbolic or ``None`` axes (dynamic export)
            become 1 for the batch and ``imgsz`` for height and width.
        name: Manifest name; by default taken from the metadata description (``"yolov8n"``).
        license: Licence of the weights; by default from the metadata (``"AGPL-3.0"``).
        source: Provenance to record.
        sha256: Checksum of the model file to record.

    Returns:
        A detection (or segmentation) manifest: NCHW float32 input, letterbox with pad 114,
        ``x / 255``, RGB, decoder ``yolo`` (``yolo_seg`` for ``task: segment``) with
        ``num_classes`` (and ``end2end: True`` for NMS-free outputs), labels in id order.

    Raises:
        ModelError: If a key is missing or malformed, the task is not ``detect`` or
            ``segment`` (decoder ``yolo_seg``: boxes, classes and instance masks), or the
            input shape does not have 4 axes; the message names the value.
    """
    task = str(metadata.get("task", "detect"))
    if task not in ("detect", "segment"):
        raise ModelError(
            f"Ultralytics task {task!r} is not supported yet (supported: detect, segment); "
            f"model metadata: {metadata.get('description', '?')!r}"
        )
    labels = _labels(_literal(metadata, "names"))
    height, width = _image_size(_literal(metadata, "imgsz"))
    shape = list(input_shape)
    if len(shape) != 4:
        raise ModelError(f"Ultralytics input {input_name!r} must have 4 axes, got {shape}")
    defaults = (1, 3, height, width)
    shape = [v if isinstance(v, int) and v > 0 else d for v, d in zip(shape, defaults)]
    params: dict[str, Any] = {"num_classes": len(labels)}
    with contextlib.suppress(ValueError):  # an unreadable stride keeps the default of 32
        params["stride"] = int(str(metadata.get("stride", 32)))
    args = _literal(metadata, "args") if "args" in metadata else {}
    if str(metadata.get("end2end", "False")) == "True" or (
        isinstance(args, dict) and args.get("nms")
    ):
        params["end2end"] = True
    return ModelManifest(
        name=name or _default_name(metadata),
        task=task,
        format="onnx",
        input=InputSpec(name=input_name, shape=tuple(shape), dtype="float32", layout="NCHW"),
        preprocess=Preprocess(
            width=width,
            height=height,
            resize="letterbox",
            pad_value=114,
            mean=(0.0, 0.0, 0.0),
            std=(255.0, 255.0, 255.0),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(name="yolo" if task == "detect" else "yolo_seg", params=params),
        labels=labels,
        license=license or _license(metadata),
        source=source,
        sha256=sha256,
    )


def read_onnx_metadata(path: str | Path) -> tuple[dict[str, str], str, list[Any]]:
    """Reads an ONNX file's custom metadata and its first input with onnxruntime.

    Args:
        path: The ``.onnx`` file.

    Returns:
        ``(metadata, input_name, input_shape)``; symbolic axes are strings or ``None``.

    Raises:
        ModelError: If the file is missing or onnxruntime cannot load it.
    """
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except _onnxruntime_errors() as error:
        raise ModelError(f"cannot load ONNX model {path}: {error}") from error
    first = session.get_inputs()[0]
    return dict(session.get_modelmeta().custom_metadata_map), first.name, list(first.shape)


def _onnxruntime_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's load errors (Fail, InvalidProtobuf, ...) derive from Exception only."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidProtobuf", "NoSuchFile", "RuntimeException")
    found = tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))
    return (*found, RuntimeError, OSError, ValueError)


def manifest_from_onnx(path: str | Path, **kwargs: Any) -> ModelManifest:
    """Builds a manifest for an Ultralytics ONNX export from its embedded metadata.

    Args:
        path: The ``.onnx`` file.
        **kwargs: Passed to :func:`manifest_from_ultralytics_metadata` (``name``, ...).

    Raises:
        ModelError: If the file cannot be read or carries no Ultralytics metadata.
    """
    metadata, input_name, input_shape = read_onnx_metadata(path)
    if "names" not in metadata:
        raise ModelError(f"{path} has no Ultralytics metadata and no manifest beside it")
    kwargs.setdefault("sha256", file_sha256(path))
    return manifest_from_ultralytics_metadata(metadata, input_name, input_shape, **kwargs)


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    ultralytics_logger = logging.getLogger("ultralytics")
    level = ultralytics_logger.level
    ultralytics_logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        ultralytics_logger.setLevel(level)


def export_ultralytics(
    weights_or_yaml: str,
    out_dir: str | Path,
    imgsz: int = 640,
    *,
    stem: str = "model",
    name: str | None = None,
) -> Path:
    """Exports an Ultralytics model to ONNX and writes its manifest beside it.

    Runs in a temporary working directory, so downloaded weights and export files never land
    in the caller's working directory. A ``.yaml`` name such as ``"yolov8n.yaml"`` builds an
    untrained model offline; a ``.pt`` name such as ``"yolov8n.pt"`` is downloaded by
    Ultralytics (needs the internet) unless it is an existing local file.

    Args:
        weights_or_yaml: A weights file or name, or a model yaml name or file.
        out_dir: Folder for ``<stem>.onnx`` and ``<stem>.json``; created if missing.
        imgsz: Square input size in pixels, a positive multiple of 32.
        stem: File stem of the written files.
        name: Manifest name; by default the stem of ``weights_or_yaml`` (``"yolov8n"``).

    Returns:
        Path of the ONNX file (NCHW float32, static shape, simplified).

    Raises:
        ConfigError: If ``imgsz`` is not a positive multiple of 32.
        ModelError: If Ultralytics is not installed (with the install hint) or the download
            or export fails.
    """
    if not isinstance(imgsz, int) or imgsz <= 0 or imgsz % 32:
        raise ConfigError(f"imgsz must be a positive multiple of 32, got {imgsz!r}")
    try:
        from ultralytics import YOLO
    except ImportError as error:
        raise ModelError(
            f"exporting {weights_or_yaml!r} needs Ultralytics (AGPL-3.0), which is not "
            f"installed: {YOLO_INSTALL_HINT}"
        ) from error
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    local = Path(weights_or_yaml).expanduser()
    target = out_dir / f"{stem}.onnx"
    with tempfile.TemporaryDirectory(prefix=".ubiq-export-", dir=out_dir) as work:
        model_ref = weights_or_yaml
        if local.is_file():
            # Ultralytics writes the export next to the weights: work on a copy so nothing
            # beside the caller's file is created or overwritten.
            model_ref = shutil.copy2(local, Path(work) / local.name)
        try:
            with _working_directory(Path(work)), _quiet_ultralytics():
                exported = YOLO(model_ref).export(
                    format="onnx", imgsz=imgsz, simplify=True, dynamic=False
                )
                exported = Path(exported).resolve()
        except _ULTRALYTICS_ERRORS as error:
            reason = " ".join(str(error).replace("\u274c", "").split())
            raise ModelError(
                f"Ultralytics could not export {weights_or_yaml!r}: {reason}"
            ) from error
        if not exported.is_file():
            raise ModelError(f"Ultralytics reported {exported} but wrote no file")
        shutil.move(str(exported), target)
    manifest = manifest_from_onnx(
        target,
        name=name or Path(weights_or_yaml).stem,
        source=f"ultralytics:{weights_or_yaml}",
    )
    manifest.save(manifest_path_for(target))
    logger.info("exported %s to %s", weights_or_yaml, target)
    return target


def train_ultralytics(
    arch: str,
    data_yaml: str | Path,
    out_dir: str | Path,
    *,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    seed: int = 0,
) -> Path:
    """Trains an Ultralytics architecture from scratch on a YOLO-layout dataset, on the CPU.

    The architecture is built from its yaml (``yolov8n`` -> ``yolov8n.yaml``), so nothing
    is downloaded. Ultralytics writes its usual run folder (``weights/best.pt``,
    ``results.csv``, plots) into ``out_dir``; the best weights are then exported to
    ``out_dir/model.onnx`` with their manifest.

    Returns:
        Path of the exported ONNX file.

    Raises:
        ModelError: If Ultralytics is not installed or training fails.
    """
    if not isinstance(imgsz, int) or imgsz <= 0 or imgsz % 32:
        raise ConfigError(f"imgsz must be a positive multiple of 32, got {imgsz!r}")
    try:
        from ultralytics import YOLO
    except ImportError as error:
        raise ModelError(
            f"training {arch!r} needs Ultralytics (AGPL-3.0), which is not installed: "
            f"{YOLO_INSTALL_HINT}"
        ) from error
    out_dir = Path(out_dir).expanduser().resolve()
    data_yaml = Path(data_yaml).expanduser().resolve()
    spec = arch if arch.endswith((".yaml", ".pt")) else f"{arch}.yaml"
    try:
        with _working_directory(out_dir.parent if out_dir.parent.exists() else Path.cwd()):
            model = YOLO(spec)
            model.train(
                data=str(data_yaml),
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                device="cpu",
                workers=0,
                seed=seed,
                deterministic=True,
                pretrained=False,
                amp=False,
                project=str(out_dir.parent),
                name=out_dir.name,
                exist_ok=True,
                verbose=False,
            )
    except _ULTRALYTICS_ERRORS as error:
        reason = " ".join(str(error).replace("\u274c", "").split())
        raise ModelError(f"Ultralytics could not train {arch!r}: {reason}") from error
    best = out_dir / "weights" / "best.pt"
    if not best.is_file():
        raise ModelError(f"Ultralytics training wrote no {best}")
    return export_ultralytics(str(best), out_dir, imgsz, stem="model", name=Path(spec).stem)
