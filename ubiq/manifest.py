"""Model manifests: everything a pipeline needs to run a model file without code changes.

A manifest lives beside the model (``model.onnx`` + ``model.json``) or inside ONNX
metadata under the key ``ubiq.manifest``. It names the task, the input tensor and its
layout, the preprocessing, the labels, the output decoder with its parameters, the
provenance and, for compressed models, the compression steps and their report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ubiq.errors import ModelError

TASKS = ("detect", "segment", "classify", "embed", "pose", "kws", "vad")
LAYOUTS = ("NCHW", "NHWC")
RESIZE_MODES = ("letterbox", "stretch")
CHANNEL_ORDERS = ("rgb", "bgr")
DTYPES = ("float32", "float16", "uint8", "int8")
MANIFEST_METADATA_KEY = "ubiq.manifest"


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ModelError(f"manifest {name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """The model's image input tensor.

    Attributes:
        name: Tensor name in the model file.
        shape: Full shape, such as ``(1, 3, 320, 320)``; ``-1`` for a dynamic axis.
        dtype: Element type the model expects.
        layout: ``"NCHW"`` or ``"NHWC"``.
    """

    name: str = "images"
    shape: tuple[int, ...] = (1, 3, 640, 640)
    dtype: str = "float32"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        if len(self.shape) != 4:
            raise ModelError(f"manifest input.shape must have 4 axes, got {self.shape}")
        _choice("input.layout", self.layout, LAYOUTS)
        _choice("input.dtype", self.dtype, DTYPES)


@dataclass(frozen=True)
class Preprocess:
    """How a BGR frame becomes the input tensor.

    ``tensor = (pixel - mean) / std`` per channel (``mean`` and ``std`` in 0..255 units),
    after resizing to ``width`` x ``height`` and reordering channels. Integer inputs skip
    normalisation unless ``quantization`` (scale, zero point) is given.
    """

    width: int = 640
    height: int = 640
    resize: str = "letterbox"
    pad_value: int = 114
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    channel_order: str = "rgb"
    quantization: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ModelError(
                f"manifest preprocess size must be positive, got {self.width}x{self.height}"
            )
        _choice("preprocess.resize", self.resize, RESIZE_MODES)
        _choice("preprocess.channel_order", self.channel_order, CHANNEL_ORDERS)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError(
                f"manifest preprocess mean/std must be 3 values with std > 0, "
                f"got mean={self.mean} std={self.std}"
            )
        if self.quantization is not None:
            scale, zero_point = self.quantization
            object.__setattr__(self, "quantization", (float(scale), int(zero_point)))


@dataclass(frozen=True)
class DecoderSpec:
    """The output decoder's registry name and its parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelManifest:
    """Everything needed to run a model file.

    Attributes:
        name: Human name of the model (zoo name or file stem).
        task: One of ``TASKS``.
        format: ``"onnx"``, ``"tflite"`` or ``"xml"`` (OpenVINO IR).
        input: The image input tensor.
        preprocess: Resize and normalisation.
        decoder: Output decoder and its parameters.
        labels: Class names indexed by class id.
        license: Licence of the weights, as an SPDX id when known.
        source: Where the file came from (URL, wheel member, training run).
        sha256: Checksum of the model file.
        compression: Compression steps applied, in order.
        report: Measured results of the compression steps.
    """

    name: str
    task: str
    format: str
    input: InputSpec
    preprocess: Preprocess
    decoder: DecoderSpec
    labels: tuple[str, ...] = ()
    license: str = "unknown"
    source: str = ""
    sha256: str = ""
    compression: tuple[Mapping[str, Any], ...] = ()
    report: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("task", self.task, TASKS)
        _choice("format", self.format, ("onnx", "tflite", "xml"))
        object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))
        object.__setattr__(self, "compression", tuple(self.compression))

    def with_updates(self, **changes: Any) -> ModelManifest:
        """Returns a copy with the given fields replaced."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-safe dict."""
        data = asdict(self)
        data["decoder"] = {"name": self.decoder.name, "params": dict(self.decoder.params)}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelManifest:
        """Builds a manifest from a dict, rejecting unknown keys.

        Raises:
            ModelError: If a key is unknown or a value is invalid, naming it.
        """
        data = dict(data)
        _reject_unknown("", data, cls)
        try:
            data["input"] = InputSpec(**_checked(data.get("input", {}), InputSpec, "input"))
            data["preprocess"] = Preprocess(
                **_checked(data.get("preprocess", {}), Preprocess, "preprocess")
            )
            decoder = _checked(data.get("decoder", {}), DecoderSpec, "decoder")
            data["decoder"] = DecoderSpec(**decoder)
            return cls(**data)
        except TypeError as error:
            raise ModelError(f"manifest is incomplete: {error}") from error
        except ValueError as error:
            raise ModelError(f"manifest has a value of the wrong type: {error}") from error

    def save(self, path: str | Path) -> Path:
        """Writes the manifest as JSON to ``path`` and returns it."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelManifest:
        """Reads a manifest JSON file.

        Raises:
            ModelError: If the file is unreadable, not JSON, or not a valid manifest.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"cannot read manifest {path}: {error}") from error
        if not isinstance(data, dict):
            raise ModelError(f"manifest {path} must hold a JSON object")
        try:
            return cls.from_dict(data)
        except ModelError as error:
            raise ModelError(f"{path}: {error}") from error


def _reject_unknown(prefix: str, data: Mapping[str, Any], kind: type) -> None:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelError(
            f"manifest has unknown key {prefix + unknown[0]!r} (known: {', '.join(sorted(known))})"
        )


def _checked(value: Any, kind: type, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ModelError(f"manifest {name} must be an object, got {type(value).__name__}")
    _reject_unknown(f"{name}.", value, kind)
    return dict(value)


def manifest_path_for(model_path: str | Path) -> Path:
    """Returns where the sidecar manifest of ``model_path`` lives (``model.json``)."""
    return Path(model_path).with_suffix(".json")
