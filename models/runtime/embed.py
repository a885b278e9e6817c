"""Embedders: models whose answer is one vector per image.

Any ONNX or TFLite model with a single output of shape ``(1, D)`` or ``(1, 1, 1, D)``
(float, or quantised and dequantised by the backend) runs as an embedder: with its
manifest (task ``embed``) when it has one, and otherwise recognised from that output
shape, with the preprocessing its input tensor implies (see :func:`guess_embed_manifest`).
``ubiq export CKPT --task embed`` writes our own backbones in this form, and
:mod:`ubiq.models.runtime.imprint` builds few-shot classifiers on top. Nothing here
imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import ModelError, WrongTaskError
from ubiq.hardware.accelerators import DeviceSpec
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess
from ubiq.models.runtime.backend import Backend, load_backend
from ubiq.models.runtime.model import find_manifest, resolve_model_path
from ubiq.models.runtime.preprocess import prepare_input

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Embedder", "guess_embed_manifest", "vector_size"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (123.675, 116.28, 103.53)
"""torchvision's ImageNet mean, in 0..255 units (RGB)."""
IMAGENET_STD = (58.395, 57.12, 57.375)
"""torchvision's ImageNet standard deviation, in 0..255 units (RGB)."""


def vector_size(shape: tuple[int, ...]) -> int | None:
    """``D`` when ``shape`` is one vector per image (``(1, D)``, ``(1, 1, 1, D)``, a
    dynamic batch axis allowed), else ``None``."""
    if len(shape) < 2 or shape[-1] <= 1:
        return None
    if shape[0] not in (1, -1) or any(axis != 1 for axis in shape[1:-1]):
        return None
    return int(shape[-1])


def guess_embed_manifest(
    path: Path, backend: Backend, input_spec: InputSpec
) -> ModelManifest | None:
    """An ``embed`` manifest for a model without one whose only output is a vector.

    The preprocessing follows the input tensor, as the model families that publish such
    files expect: integer NHWC inputs (TFLite, Coral) take raw RGB pixels; float NHWC
    inputs (TensorFlow exports) take RGB scaled to ``[-1, 1]``; float NCHW inputs
    (torchvision exports) take RGB normalised with the ImageNet mean and standard
    deviation. The image is stretched to the input size. Returns ``None`` when the
    outputs are not one vector.
    """
    if len(backend.outputs) != 1:
        return None
    size = vector_size(backend.outputs[0].shape)
    if size is None:
        return None
    from ubiq.models.runtime.model import _input_size

    width, height = _input_size(input_spec)
    if width <= 0 or height <= 0:
        width = height = 224
    if input_spec.dtype in ("uint8", "int8"):
        mean, std, rule = (0.0,) * 3, (1.0,) * 3, "raw RGB pixels (integer input)"
    elif input_spec.layout == "NHWC":
        mean, std, rule = (127.5,) * 3, (127.5,) * 3, "RGB in [-1, 1] (float NHWC input)"
    else:
        mean, std, rule = IMAGENET_MEAN, IMAGENET_STD, "ImageNet mean/std (float NCHW input)"
    return ModelManifest(
        name=path.stem,
        task="embed",
        format=path.suffix.lower().lstrip("."),
        input=input_spec,
        preprocess=Preprocess(width, height, "stretch", 0, mean, std),
        decoder=DecoderSpec("embedding", {"dim": size, "preprocess_rule": rule}),
        source=str(path),
    )


@dataclass
class Embedder:
    """Runs an embedder on BGR images: ``Embedder.load(path)(image) -> (D,) float32``.

    Attributes:
        path: The model file.
        backend: Its opened backend.
        manifest: Its manifest (task ``embed``).
        dim: Values per embedding.
    """

    path: Path
    backend: Backend
    manifest: ModelManifest
    dim: int

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
        task: str = "embed",
    ) -> Embedder:
        """Opens an embedder by path or zoo name.

        Args:
            task: The manifest task the file must have (``classify`` for an imprinted
                classifier's embedder, whose manifest describes the classifier).

        Raises:
            ModelError: If the file is missing or corrupt, or its output is not one vector
                per image (naming the shape); ``WrongTaskError`` if it is made for another
                task.
            BackendUnavailable: If the backend's library or the device is missing.
        """
        path = resolve_model_path(name_or_path)
        runtime = load_backend(path, backend, num_threads=num_threads, device=device)
        outputs = runtime.outputs
        size = vector_size(outputs[0].shape) if len(outputs) == 1 else None
        if size is None:
            shapes = ", ".join(f"{t.name} {t.shape}" for t in outputs)
            raise ModelError(
                f"{path.name} is not an embedder: its output must be one vector per image "
                f"((1, D) or (1, 1, 1, D)), got {shapes}"
            )
        manifest = find_manifest(path, runtime)
        if manifest.task != task:
            article = "an" if manifest.task[0] in "aeiou" else "a"
            wanted = "an embedder" if task == "embed" else f"a {task!r} model"
            raise WrongTaskError(
                f"{path.name} is {article} {manifest.task!r} model, not {wanted}", manifest.task
            )
        rule = manifest.decoder.params.get("preprocess_rule")
        if rule and manifest.source == str(path):
            logger.warning(
                "%s has no manifest; running it as an embedder of %d values, input %s",
                path.name,
                size,
                rule,
            )
        embedder = cls(path=path, backend=runtime, manifest=manifest, dim=size)
        embedder.check_runs()
        return embedder

    def check_runs(self) -> None:
        """Runs a blank image so a file that opens but cannot run fails now, not later.

        Raises:
            ModelError: If the backend fails or answers with the wrong number of values.
        """
        preprocess = self.manifest.preprocess
        vector = self(np.zeros((preprocess.height, preprocess.width, 3), np.uint8))
        if vector.shape != (self.dim,):
            raise ModelError(
                f"{self.path.name} answered {vector.shape} values, its output says {self.dim}"
            )

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The input tensor for one ``(H, W, 3)`` uint8 BGR image.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
        """
        return prepare_input(image, self.manifest.preprocess, self.manifest.input)[0]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The ``(D,)`` float32 embedding of one ``(H, W, 3)`` uint8 BGR image.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
            ModelError: If the backend fails to run.
        """
        outputs = self.backend.run({self.manifest.input.name: self.prepare(image)})
        vector = np.asarray(outputs[self.backend.outputs[0].name], np.float32).reshape(-1)
        if not np.all(np.isfinite(vector)):
            raise ModelError(f"{self.path.name} answered a non-finite embedding")
        return vector

    def embed_many(self, images: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 embeddings of ``N`` BGR images, one inference each."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self(image) for image in images])
