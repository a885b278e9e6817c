"""Models that answer with class probabilities: image classifiers and keyword spotters.

``Classifier.load("digits.onnx")(frame)`` and ``KeywordModel.load("ubiq-commands-demo")(clip,
16000)`` run a model file the way :class:`~ubiq.models.runtime.model.DetectionModel` does:
the backend opens the file, :func:`~ubiq.models.runtime.model.find_manifest` says how to feed
it, and the answer is a :class:`ClassProbabilities` (softmax over the model's outputs when its
manifest names the ``softmax`` decoder). Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.hardware.accelerators import DeviceSpec
from ubiq.manifest import ModelManifest
from ubiq.models.runtime.audio_features import LogMelOptions, resample
from ubiq.models.runtime.backend import Backend, load_backend
from ubiq.models.runtime.model import find_manifest, open_task_model, resolve_model_path
from ubiq.models.runtime.preprocess import prepare_input

__all__ = [
    "ClassProbabilities",
    "Classifier",
    "KeywordModel",
    "model_task",
    "open_task_model",
    "softmax",
]


def model_task(name_or_path: str | Path) -> str:
    """The task a model's manifest names (``detect``, ``classify``, ``segment``, ``kws``, ...).

    Raises:
        ModelError: If the model cannot be opened or has no manifest.
    """
    path = resolve_model_path(name_or_path)
    return find_manifest(path, load_backend(path, num_threads=1)).task


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 and returned as float32.

    Args:
        logits: ``(..., C)`` scores.

    Returns:
        ``(..., C)`` float32 probabilities that sum to 1 along the last axis.
    """
    values = np.asarray(logits, np.float64)
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class ClassProbabilities:
    """What a classifier or keyword model made of one input.

    Attributes:
        probabilities: ``(C,)`` float32 class probabilities, indexed by class id.
        labels: Class names indexed by class id (empty when the manifest has none).
    """

    probabilities: np.ndarray
    labels: tuple[str, ...] = ()

    @property
    def class_id(self) -> int:
        """The most probable class."""
        return int(np.argmax(self.probabilities))

    @property
    def label(self) -> str:
        """The most probable class's name (its id as text without labels)."""
        return self.name_of(self.class_id)

    @property
    def confidence(self) -> float:
        """The most probable class's probability."""
        return float(self.probabilities[self.class_id])

    def name_of(self, class_id: int) -> str:
        """The name of ``class_id`` (its id as text when the model has no labels)."""
        return self.labels[class_id] if class_id < len(self.labels) else str(class_id)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as ``(label, probability)``, most probable first.

        Raises:
            ConfigError: If ``k`` is below 1.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.name_of(int(i)), float(self.probabilities[i])) for i in order]


def _class_count(path: Path, runtime: Backend, manifest: ModelManifest) -> int | None:
    """The number of classes the first output holds (checked against the labels)."""
    shape = runtime.outputs[0].shape
    count = math.prod(shape[1:]) if all(axis > 0 for axis in shape[1:]) else None
    if count is not None and manifest.labels and count != len(manifest.labels):
        raise ModelError(
            f"{path.name} outputs {count} scores ({runtime.outputs[0].name} {shape}) but its "
            f"manifest has {len(manifest.labels)} labels"
        )
    return count


@dataclass
class _ScoringModel:
    """A backend and manifest whose first output is one score per class."""

    path: Path
    backend: Backend
    manifest: ModelManifest

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def scores(self, tensor: np.ndarray) -> np.ndarray:
        """The raw ``(C,)`` output (logits, or probabilities) for a prepared input tensor."""
        outputs = self.backend.run({self.manifest.input.name: tensor})
        return np.asarray(outputs[self.backend.outputs[0].name]).reshape(-1)

    def probabilities(self, scores: np.ndarray) -> ClassProbabilities:
        """Class probabilities of raw scores (a softmax when the decoder names one)."""
        values = np.asarray(scores, np.float32)
        if self.manifest.decoder.name == "softmax":
            values = softmax(values)
        return ClassProbabilities(values, self.labels)


@dataclass
class Classifier(_ScoringModel):
    """Runs an image classifier (manifest task ``classify``) on BGR frames.

    Use :meth:`load`; call the instance on an ``(H, W, 3)`` uint8 BGR image. The image goes
    through the manifest's preprocessing (resize, mean/std, layout) as in deployment.
    """

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
    ) -> Classifier:
        """Opens a classifier by path or zoo name; a ``ubiq learn`` folder opens as an
        :class:`~ubiq.models.runtime.imprint.ImprintedClassifier`.

        Raises:
            ModelError: If the file is missing or corrupt, not a classifier, or its output
                size differs from its labels.
            BackendUnavailable: If the backend's library or the device is missing.
        """
        path, runtime, manifest = open_task_model(
            name_or_path, "classify", backend=backend, num_threads=num_threads, device=device
        )
        if manifest.decoder.name == "imprint":
            from ubiq.models.runtime.imprint import ImprintedClassifier

            return ImprintedClassifier.from_opened(path, runtime, manifest)
        _class_count(path, runtime, manifest)
        return cls(path=path, backend=runtime, manifest=manifest)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The model's input tensor for one BGR image.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
        """
        return prepare_input(image, self.manifest.preprocess, self.manifest.input)[0]

    def __call__(self, image: np.ndarray) -> ClassProbabilities:
        """Class probabilities of one ``(H, W, 3)`` uint8 BGR image.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
            ModelError: If the backend fails to run.
        """
        return self.probabilities(self.scores(self.prepare(image)))


@dataclass
class KeywordModel(_ScoringModel):
    """Runs a keyword or command model (manifest task ``kws``) on audio clips.

    Use :meth:`load`; call the instance on one utterance. The clip is resampled to the
    model's rate, centred in its clip length (cut or zero-padded) and turned into log-mel
    features with the settings its manifest records, as ``ubiq listen`` feeds it.

    :meth:`embed` answers the model's penultimate vector (the input of its last fully
    connected layer), the voice-and-phrase embedding ``ubiq learn --task kws`` imprints on:
    from the model's ``embedding`` output when it has one, else (ONNX) from a copy of the
    model with that tensor added as an output (:mod:`~ubiq.models.runtime.onnx_outputs`;
    the file on disk is not changed).

    Attributes:
        features: The log-mel settings of the model.
        num_threads: Inference threads it was opened with (also used for the embedding).
    """

    features: LogMelOptions = LogMelOptions()
    num_threads: int | None = None
    _embedder: Backend | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
    ) -> KeywordModel:
        """Opens a keyword model by path or zoo name (``ubiq-commands-demo``).

        Raises:
            ModelError: If the file is missing or corrupt, not a keyword model, or its
                manifest lacks valid log-mel feature settings.
            BackendUnavailable: If the backend's library or the device is missing.
        """
        path, runtime, manifest = open_task_model(
            name_or_path, "kws", backend=backend, num_threads=num_threads, device=device
        )
        if "features" not in manifest.decoder.params:
            raise ModelError(f"{path}: its manifest has no log-mel feature settings")
        try:
            features = LogMelOptions.from_dict(manifest.decoder.params["features"])
        except (TypeError, ValueError) as error:
            raise ModelError(f"{path}: bad feature settings in its manifest: {error}") from error
        _class_count(path, runtime, manifest)
        return cls(
            path=path,
            backend=runtime,
            manifest=manifest,
            features=features,
            num_threads=num_threads,
        )

    @property
    def sample_rate(self) -> int:
        """Samples per second the features are computed at."""
        return self.features.sample_rate

    def prepare(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """The model's input tensor for one clip.

        Args:
            samples: ``(N,)`` mono samples, float in ``[-1, 1]`` or int16.
            sample_rate: Samples per second of ``samples``.

        Returns:
            The features in the input's layout: ``(1, 1, n_mels, frames)`` (NCHW) or
            ``(1, n_mels, frames, 1)`` (NHWC), float32 (float16 for a float16 input).

        Raises:
            ValueError: If ``samples`` is not 1-D float or int16, or ``sample_rate`` is not
                positive.
        """
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(f"samples must have shape (N,), got {samples.shape}")
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        elif not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"samples must be float or int16, got dtype {samples.dtype}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if sample_rate != self.features.sample_rate:
            samples = resample(samples, sample_rate, self.features.sample_rate)
        tensor = self.features.model_input(samples)
        if self.manifest.input.layout == "NHWC":
            tensor = np.ascontiguousarray(tensor.transpose(0, 2, 3, 1))
        if self.manifest.input.dtype == "float16":
            tensor = tensor.astype(np.float16)
        return tensor

    def __call__(self, samples: np.ndarray, sample_rate: int) -> ClassProbabilities:
        """Class probabilities of one utterance.

        Raises:
            ValueError: If ``samples`` or ``sample_rate`` is invalid.
            ModelError: If the backend fails to run.
        """
        return self.probabilities(self.scores(self.prepare(samples, sample_rate)))

    def _embedding_backend(self) -> Backend:
        """A backend whose outputs include ``embedding`` (this one when it has it).

        Raises:
            ModelError: If the model is not ONNX and has no ``embedding`` output, or its
                scores do not come from a fully connected layer.
        """
        from ubiq.models.runtime.onnx_outputs import EMBEDDING_OUTPUT, embedding_model

        if any(output.name == EMBEDDING_OUTPUT for output in self.backend.outputs):
            return self.backend
        if self._embedder is not None:
            return self._embedder
        if self.path.suffix.lower() != ".onnx":
            raise ModelError(
                f"{self.path.name} has no {EMBEDDING_OUTPUT!r} output; keyword embeddings need "
                "the ONNX export of the model"
            )
        try:
            edited = embedding_model(self.path.read_bytes())
        except ModelError as error:
            raise ModelError(f"{self.path.name}: {error}") from error
        handle, temp_name = tempfile.mkstemp(prefix="ubiq-kws-", suffix=".onnx")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(edited)
            self._embedder = load_backend(temp_name, num_threads=self.num_threads, device="cpu")
        finally:
            os.unlink(temp_name)
        return self._embedder

    def scores_and_embedding(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(C,)`` scores and the ``(D,)`` float32 embedding of a prepared input, from
        one run of the model.

        Raises:
            ModelError: If the model has no embedding to expose (see the class docstring) or
                fails to run.
        """
        from ubiq.models.runtime.onnx_outputs import EMBEDDING_OUTPUT

        runtime = self._embedding_backend()
        outputs = runtime.run({self.manifest.input.name: tensor})
        scores = np.asarray(outputs[runtime.outputs[0].name]).reshape(-1)
        return scores, np.asarray(outputs[EMBEDDING_OUTPUT], np.float32).reshape(-1)

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """The ``(D,)`` float32 embedding (penultimate vector) of one utterance, prepared as
        :meth:`__call__` prepares it.

        Raises:
            ValueError: If ``samples`` or ``sample_rate`` is invalid.
            ModelError: If the model has no embedding to expose or fails to run.
        """
        return self.scores_and_embedding(self.prepare(samples, sample_rate))[1]
