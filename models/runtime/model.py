"""A detection model: a backend, its manifest, preprocessing and an output decoder.

``DetectionModel.load("blazeface")`` or ``DetectionModel.load("yolov8n.onnx")`` finds the
manifest (sidecar ``model.json``, ``ubiq.manifest`` ONNX metadata, Ultralytics ONNX
metadata, or the output shapes as a last resort) and turns BGR frames into
:class:`~ubiq.types.Detections` in frame pixels.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ubiq.errors import ConfigError, ModelError, WrongTaskError
from ubiq.hardware.accelerators import DeviceSpec
from ubiq.manifest import (
    MANIFEST_METADATA_KEY,
    DecoderSpec,
    InputSpec,
    ModelManifest,
    Preprocess,
    manifest_path_for,
)
from ubiq.models.runtime.backend import Backend, load_backend
from ubiq.models.runtime.decoders import DecodeOptions, get_decoder, guess_decoder
from ubiq.models.runtime.preprocess import prepare_input
from ubiq.types import Detections

logger = logging.getLogger(__name__)

MODEL_SUFFIXES = (".onnx", ".tflite", ".xml")


def resolve_model_path(name_or_path: str | Path) -> Path:
    """Returns a model file for a path or a zoo name (pulling it into the cache if needed).

    Raises:
        ModelError: If a path does not exist.
        ZooError: If a zoo name is unknown or cannot be fetched.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.suffix in MODEL_SUFFIXES)
        if len(candidates) != 1:
            raise ModelError(
                f"model folder {path} must hold exactly one .onnx or .tflite file, "
                f"found {len(candidates)}"
            )
        return candidates[0]
    if path.exists():
        return path
    if path.suffix.lower() in MODEL_SUFFIXES or "/" in text or "\\" in text:
        raise ModelError(f"model file not found: {text}")
    from ubiq.models.zoo import cached_path, get_entry, resolve_model

    entry = get_entry(text)
    if entry.extra and cached_path(entry.name) is None:
        return _pull_in_child(entry.name)
    return Path(resolve_model(text))


def _pull_in_child(name: str) -> Path:
    """Pulls a zoo entry that needs a toolchain extra (torch, Ultralytics) in a child
    process, so the runtime process never imports them.

    Raises:
        ZooError: With the child's error message when the pull fails.
    """
    from ubiq.models.runtime.isolated import pull_in_child

    logger.warning("%s is not cached; pulling it in a separate process", name)
    return pull_in_child(name)


def _manifest_from_input(backend: Backend) -> InputSpec:
    if len(backend.inputs) != 1:
        names = [t.name for t in backend.inputs]
        raise ModelError(f"expected a model with one image input, found inputs {names}")
    tensor = backend.inputs[0]
    shape = tensor.shape
    if len(shape) != 4:
        raise ModelError(f"expected a 4-D image input, got {tensor.name} with shape {shape}")
    layout = "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
    dtype = tensor.dtype if tensor.dtype in ("float32", "float16", "uint8", "int8") else "float32"
    return InputSpec(name=tensor.name, shape=shape, dtype=dtype, layout=layout)


def _input_size(spec: InputSpec) -> tuple[int, int]:
    if spec.layout == "NCHW":
        return spec.shape[3], spec.shape[2]
    return spec.shape[2], spec.shape[1]


def find_manifest(path: Path, backend: Backend) -> ModelManifest:
    """Finds or derives the manifest of ``path``, completed with the backend's real input.

    Raises:
        ModelError: If no manifest exists and no decoder understands the outputs.
    """
    input_spec = _manifest_from_input(backend)
    sidecar = manifest_path_for(path)
    manifest: ModelManifest | None = None
    if sidecar.is_file():
        manifest = ModelManifest.load(sidecar)
    elif MANIFEST_METADATA_KEY in backend.metadata:
        try:
            manifest = ModelManifest.from_dict(json.loads(backend.metadata[MANIFEST_METADATA_KEY]))
        except json.JSONDecodeError as error:
            raise ModelError(f"{path}: metadata {MANIFEST_METADATA_KEY} is not JSON") from error
    elif "names" in backend.metadata and "imgsz" in backend.metadata:
        from ubiq.models.zoo.ultralytics_adapter import manifest_from_ultralytics_metadata

        manifest = manifest_from_ultralytics_metadata(
            backend.metadata, input_spec.name, input_spec.shape
        )
    else:
        manifest = _guess_manifest(path, backend, input_spec)
    # The file is the truth for tensor names, shapes and types.
    manifest = replace(manifest, input=input_spec, format=path.suffix.lower().lstrip("."))
    return manifest


def open_task_model(
    name_or_path: str | Path,
    task: str,
    *,
    backend: str | None = None,
    num_threads: int | None = None,
    device: str | DeviceSpec = "auto",
    streams: int = 1,
) -> tuple[Path, Backend, ModelManifest]:
    """Opens a model file of ``task`` (a manifest task: ``detect``, ``classify``, ``kws``,
    ``segment``).

    Args:
        name_or_path: A model file, a folder holding one, or a zoo name.
        task: The manifest task the model must have.
        backend: ``onnxruntime`` or ``litert``; ``None`` picks by file suffix.
        num_threads: Inference threads; ``None`` lets the runtime decide.
        device: As for :func:`~ubiq.models.runtime.backend.load_backend`.
        streams: Frames run at once, as for
            :func:`~ubiq.models.runtime.backend.load_backend`.

    Returns:
        ``(path, backend, manifest)``: the model file, its opened backend and its manifest.

    Raises:
        WrongTaskError: If the model is made for another task (its ``task`` says which).
        ModelError: If the file is missing or corrupt, or has no manifest.
        BackendUnavailable: If the backend's library or the device is missing.
    """
    path = resolve_model_path(name_or_path)
    runtime = load_backend(path, backend, num_threads=num_threads, device=device, streams=streams)
    manifest = find_manifest(path, runtime)
    if manifest.task != task:
        article = "an" if manifest.task[0] in "aeiou" else "a"
        raise WrongTaskError(
            f"{path.name} is {article} {manifest.task!r} model, not a {task!r} one", manifest.task
        )
    return path, runtime, manifest


def _guess_manifest(path: Path, backend: Backend, input_spec: InputSpec) -> ModelManifest:
    shapes = [t.shape for t in backend.outputs]
    names = [t.name for t in backend.outputs]
    decoder = guess_decoder(shapes, names)
    if decoder is None:
        from ubiq.models.runtime.decoders.segment_manifest import guess_segment_manifest
        from ubiq.models.runtime.embed import guess_embed_manifest

        manifest = guess_embed_manifest(path, backend, input_spec)
        if manifest is not None:
            return manifest

        manifest = guess_segment_manifest(path, backend, input_spec)
        if manifest is not None:
            return manifest
        raise ModelError(
            f"no decoder understands the outputs of {path.name} "
            f"({', '.join(f'{n} {s}' for n, s in zip(names, shapes))}); "
            f"write a manifest {manifest_path_for(path).name} beside it"
        )
    width, height = _input_size(input_spec)
    if decoder == "blazeface":
        preprocess = Preprocess(width, height, "letterbox", 0, (127.5,) * 3, (127.5,) * 3)
    elif decoder == "ssd" and input_spec.dtype in ("uint8", "int8"):
        preprocess = Preprocess(width, height, "stretch", 0, (0.0,) * 3, (1.0,) * 3)
    elif decoder == "ssd":
        preprocess = Preprocess(width, height, "stretch", 0, (127.5,) * 3, (127.5,) * 3)
    else:
        preprocess = Preprocess(width, height)
    logger.warning("%s has no manifest; guessed decoder %r from its outputs", path.name, decoder)
    return ModelManifest(
        name=path.stem,
        task="detect",
        format=path.suffix.lower().lstrip("."),
        input=input_spec,
        preprocess=preprocess,
        decoder=DecoderSpec(decoder),
        source=str(path),
    )


@dataclass
class StageTimes:
    """Milliseconds spent in each stage of the last call."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0


@dataclass
class DetectionModel:
    """Runs a detection model file on BGR frames.

    Use :meth:`load`; call the instance on an ``(H, W, 3)`` uint8 BGR image.
    """

    path: Path
    backend: Backend
    manifest: ModelManifest
    confidence_threshold: float = 0.25
    iou_threshold: float = 0.45
    class_ids: np.ndarray | None = None
    max_detections: int = 300
    last_times: StageTimes = field(default_factory=StageTimes)

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
        confidence_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        classes: Sequence[str | int] | None = None,
        imgsz: int | None = None,
        max_detections: int = 300,
        streams: int = 1,
    ) -> DetectionModel:
        """Opens a model by zoo name or path.

        ``device`` is ``auto``, ``cpu``, ``cuda``, ``tensorrt``, ``openvino`` or
        ``coral[:usb|usb:N|pci|pci:N]``; ``model.backend.device_reason`` says what ``auto``
        chose. ``streams`` > 1 lets a pipeline run that many frames at once from threads
        (for files; see :func:`~ubiq.models.runtime.backend.choose_streams`);
        ``model.backend.streams`` says what the backend took.

        Raises:
            ConfigError: If a threshold, class name or image size is invalid.
            ModelError: If the file is missing, corrupt, or its outputs are not understood.
            BackendUnavailable: If the backend's library or the device is missing.
        """
        for name, value in (
            ("confidence_threshold", confidence_threshold),
            ("iou_threshold", iou_threshold),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value}")
        path, runtime, manifest = open_task_model(
            name_or_path,
            "detect",
            backend=backend,
            num_threads=num_threads,
            device=device,
            streams=streams,
        )
        get_decoder(manifest.decoder.name)  # fail early on an unknown decoder name
        model_width, model_height = _input_size(manifest.input)
        stride = int(manifest.decoder.params.get("stride", 32) or 1)
        if imgsz is not None and (imgsz <= 0 or imgsz % stride):
            raise ConfigError(f"imgsz must be a positive multiple of {stride}, got {imgsz}")
        if imgsz is not None and (model_width, model_height) != (imgsz, imgsz):
            if model_width > 0 and model_height > 0:
                raise ConfigError(
                    f"imgsz {imgsz} does not match the fixed input size "
                    f"{model_width}x{model_height} of {path.name}; export the model at {imgsz}"
                )
            manifest = replace(
                manifest, preprocess=replace(manifest.preprocess, width=imgsz, height=imgsz)
            )
        model = cls(
            path=path,
            backend=runtime,
            manifest=manifest,
            confidence_threshold=confidence_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        model.class_ids = model.class_ids_for(classes) if classes else None
        try:
            model.warmup()
        except ModelError as error:
            raise ModelError(f"{error} (input {manifest.input.shape})") from error
        return model

    def warmup(self, runs: int = 1) -> None:
        """Runs the model on a blank frame so the first real frame is not the slow one."""
        preprocess = self.manifest.preprocess
        blank = np.zeros((preprocess.height, preprocess.width, 3), np.uint8)
        tensor, _ = self.prepare(blank)
        for _ in range(runs):
            self.infer(tensor)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def class_ids_for(self, classes: Sequence[str | int]) -> np.ndarray:
        """Maps class names (or ids as text) to ids.

        Raises:
            ConfigError: If a name is not one of the model's labels, with close matches.
        """
        import difflib

        ids = []
        for item in classes:
            text = str(item).strip()
            if text.isdigit():
                if self.labels and int(text) >= len(self.labels):
                    raise ConfigError(
                        f"classes: id {text} is out of range; {self.path.name} has "
                        f"{len(self.labels)} classes (0-{len(self.labels) - 1})"
                    )
                ids.append(int(text))
            elif text in self.labels:
                ids.append(self.labels.index(text))
            else:
                close = difflib.get_close_matches(text, self.labels, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"classes: {text!r} is not a label of {self.path.name}{hint}")
        return np.asarray(sorted(set(ids)), np.int64)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, object]:
        """Preprocesses a BGR image; returns the input tensor and its transform."""
        return prepare_input(image, self.manifest.preprocess, self.manifest.input)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Runs the backend on a prepared tensor; returns outputs in model order."""
        outputs = self.backend.run({self.manifest.input.name: tensor})
        return [outputs[t.name] for t in self.backend.outputs]

    def decode(self, outputs: list[np.ndarray], transform) -> Detections:
        """Decodes raw outputs and maps boxes back to frame pixels."""
        preprocess = self.manifest.preprocess
        options = DecodeOptions(
            input_width=preprocess.width,
            input_height=preprocess.height,
            confidence_threshold=self.confidence_threshold,
            iou_threshold=self.iou_threshold,
            class_ids=self.class_ids,
            max_detections=self.max_detections,
            params=dict(self.manifest.decoder.params),
            output_names=tuple(t.name for t in self.backend.outputs),
        )
        try:
            raw = get_decoder(self.manifest.decoder.name)(outputs, options)
        except (TypeError, ValueError, KeyError, IndexError) as error:
            raise ModelError(
                f"decoder {self.manifest.decoder.name!r} cannot decode the outputs of "
                f"{self.path.name} (params {dict(self.manifest.decoder.params)}): {error}"
            ) from error
        keypoints = None
        if raw.keypoints is not None and len(raw.keypoints):
            keypoints = transform.points_to_source(raw.keypoints)
        return Detections(
            xyxy=transform.to_source(raw.xyxy),
            confidence=raw.confidence,
            class_id=raw.class_id,
            keypoints=keypoints,
            labels=self.labels,
        )

    def __call__(self, image: np.ndarray) -> Detections:
        """Detects objects in one ``(H, W, 3)`` uint8 BGR image."""
        start = time.perf_counter()
        tensor, transform = self.prepare(image)
        prepared = time.perf_counter()
        outputs = self.infer(tensor)
        inferred = time.perf_counter()
        detections = self.decode(outputs, transform)
        done = time.perf_counter()
        self.last_times = StageTimes(
            (prepared - start) * 1e3, (inferred - prepared) * 1e3, (done - inferred) * 1e3
        )
        return detections
