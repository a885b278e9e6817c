"""Few-shot classifiers by weight imprinting, in numpy on top of any embedder.

Qi, Brown and Lowe, "Low-shot learning with imprinted weights" (CVPR 2018): a new class's
weight is the mean of its examples' normalised embeddings, written straight into the
classifier. Here, as in SimpleShot's "CL2N" (Wang et al. 2019):

- which class: an embedding is centred (the mean embedding of the first examples learned,
  two classes or more, is subtracted: features after a ReLU all point the same way, and
  the centre removes that shared direction; classes added later keep the first centre)
  and scaled to unit length, ``x``; class ``c``'s weight ``w_c`` is the mean of its
  examples' ``x``, and the answer is the nearest weight, ``argmax_c x.w_c - |w_c|^2 / 2``
  (a linear layer: the imprinted weights and a bias), with probabilities
  ``softmax(scale * (x.w_c - |w_c|^2 / 2))``;
- every example is embedded as two views (itself and its central 80%; a third, mirrored,
  with ``mirror``), the picture itself counting twice as much as each other view, so one
  picture already gives a small spread;
- the weights may be refined by a few steps of gradient descent on the cross-entropy of
  those views, in numpy (``refine_steps``); rows of classes learned earlier never move;
- whether it is any of them: each class also keeps a prototype in the embedder's own
  (uncentred) space, and a threshold on the cosine to it chosen from its examples
  (:data:`THRESHOLD_RULE`); below it the answer is ``unknown``. The centred space cannot
  decide this: with two classes their centred weights point in opposite directions, so
  every embedding is on one's side.

A learned classifier is a folder (``ubiq learn --out OUT``): the embedder file, a manifest
(task ``classify``, decoder ``imprint``, the labels and thresholds) and ``classes.npz``
with the weights. ``Classifier.load(OUT)`` and ``ubiq classify --model OUT`` run it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError, DatasetError, ModelError
from ubiq.manifest import DecoderSpec, ModelManifest, manifest_path_for
from ubiq.models.runtime.backend import Backend
from ubiq.models.runtime.embed import vector_size
from ubiq.models.runtime.tasks import Classifier
from ubiq.paths import file_sha256, replace_dir

__all__ = [
    "DEFAULT_SCALE",
    "ImprintedClassifier",
    "THRESHOLD_RULE",
    "UNKNOWN",
    "ImprintedAnswer",
    "ImprintedHead",
    "build_head",
    "example_views",
    "load_head",
    "read_class_folders",
    "save_learned",
]

UNKNOWN = "unknown"
"""The label answered below a class's similarity threshold."""
DEFAULT_SCALE = 16.0
"""Score-to-logit scale of the softmax (the scores are nearness on the unit sphere)."""
WEIGHTS_FILE = "classes.npz"
VIEW_WEIGHT = 0.5
"""Weight of a cropped or mirrored view against its picture's own in a class's mean."""
THRESHOLD_RULE = (
    "per class: halfway between the lowest similarity of its own examples (leave-one-out "
    "with two or more examples, the mirrored and cropped views with one) and the highest "
    "similarity of another class's example (or weight, for classes learned before), never "
    "above that lowest own similarity; with no other class, the lowest own similarity minus "
    "its distance to 1"
)


def example_views(image: np.ndarray, *, mirror: bool = False) -> list[np.ndarray]:
    """The views of one example picture: itself, its central 80% and, with ``mirror``,
    itself mirrored left-right (the embedder resizes each). Mirroring suits objects that
    look the same mirrored (pets, vehicles), not text, digits or logos."""
    height, width = image.shape[:2]
    dy, dx = height // 10, width // 10
    crop = image[dy : height - dy, dx : width - dx] if height > 10 and width > 10 else image
    views = [image, np.ascontiguousarray(crop)]
    if mirror:
        views.append(np.ascontiguousarray(image[:, ::-1]))
    return views


def _weighted_mean(rows: np.ndarray) -> np.ndarray:
    """Mean of one picture's views with the picture itself counting 1 and each other view
    :data:`VIEW_WEIGHT`."""
    weights = np.full(len(rows), VIEW_WEIGHT)
    weights[0] = 1.0
    return (rows * weights[:, None]).sum(axis=0) / weights.sum()


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class ImprintedAnswer:
    """What an imprinted classifier made of one embedding.

    Attributes:
        probabilities: ``(C,)`` softmax of the scaled cosines in the centred space (which
            class).
        similarities: ``(C,)`` cosine to each class's prototype in the embedder's own
            space (whether it is any of them).
        labels: Class names.
        thresholds: ``(C,)`` lowest prototype cosine each class accepts.
    """

    probabilities: np.ndarray
    similarities: np.ndarray
    labels: tuple[str, ...]
    thresholds: np.ndarray

    @property
    def class_id(self) -> int:
        """The most probable class (also when the answer is unknown)."""
        return int(np.argmax(self.probabilities))

    @property
    def similarity(self) -> float:
        """Cosine to the answered class's prototype."""
        return float(self.similarities[self.class_id])

    @property
    def known(self) -> bool:
        """Whether the answered class accepts it (its threshold is met)."""
        return self.similarity >= float(self.thresholds[self.class_id])

    @property
    def label(self) -> str:
        """The most probable class's name, or :data:`UNKNOWN` below its threshold."""
        return self.labels[self.class_id] if self.known else UNKNOWN

    @property
    def confidence(self) -> float:
        """The softmax probability of the most probable class."""
        return float(self.probabilities[self.class_id])

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as ``(label, probability)``."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.labels[int(i)], float(self.probabilities[i])) for i in order]


@dataclass
class ImprintedHead:
    """Class weights (which class), prototypes and thresholds (whether any), the centre
    and the softmax scale.

    Attributes:
        labels: Class names, in row order.
        weights: ``(C, D)`` float32 class means in the centred, normalised space.
        prototypes: ``(C, D)`` float32 unit rows in the embedder's own space.
        thresholds: ``(C,)`` float32 lowest accepted prototype cosine per class.
        shots: Example pictures each class was learned from.
        scale: Score-to-logit scale.
        refine_steps: Refinement steps each class's weights had when learned.
        centre: ``(D,)`` float32 subtracted from an embedding before the weights see it
            (zeros: no centring).
    """

    labels: tuple[str, ...]
    weights: np.ndarray
    prototypes: np.ndarray
    thresholds: np.ndarray
    shots: tuple[int, ...]
    scale: float = DEFAULT_SCALE
    refine_steps: tuple[int, ...] = field(default_factory=tuple)
    centre: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self.weights = np.asarray(self.weights, np.float32)
        self.prototypes = np.asarray(self.prototypes, np.float32)
        self.thresholds = np.asarray(self.thresholds, np.float32).reshape(-1)
        count = len(self.labels)
        if self.weights.ndim != 2 or self.weights.shape[0] != count:
            raise ModelError(f"imprinted weights must be ({count}, D), got {self.weights.shape}")
        if self.prototypes.shape != self.weights.shape:
            raise ModelError(
                f"imprinted prototypes must be {self.weights.shape}, got {self.prototypes.shape}"
            )
        if self.thresholds.shape != (count,) or len(self.shots) != count:
            raise ModelError("imprinted thresholds and shots must have one value per class")
        if not self.refine_steps:
            self.refine_steps = (0,) * count
        dim = self.weights.shape[1]
        self.centre = np.zeros(dim, np.float32) if self.centre is None else self.centre
        self.centre = np.asarray(self.centre, np.float32).reshape(-1)
        if self.centre.shape != (dim,):
            raise ModelError(f"imprinted centre must have {dim} values, got {self.centre.shape}")

    @property
    def dim(self) -> int:
        """Values per embedding."""
        return int(self.weights.shape[1])

    def normalise(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings (``(D,)`` or ``(N, D)``) centred and scaled to unit length, float64."""
        return _unit(np.asarray(embeddings, np.float64) - self.centre.astype(np.float64))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """``x.w_c - |w_c|^2 / 2`` for ``(D,)`` or ``(N, D)`` embeddings: larger is nearer."""
        weights = self.weights.astype(np.float64)
        return self.normalise(embeddings) @ weights.T - 0.5 * (weights**2).sum(axis=1)

    def decide(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised answers for ``(N, D)`` embeddings: class ids, prototype cosines of
        those classes, and whether each is known (not ``unknown``)."""
        rows = np.atleast_2d(np.asarray(embeddings, np.float64))
        class_ids = self.scores(rows).argmax(axis=1)
        raw = _unit(rows) @ self.prototypes.T.astype(np.float64)
        similarity = raw[np.arange(len(rows)), class_ids]
        return class_ids, similarity, similarity >= self.thresholds[class_ids]

    def answer(self, embedding: np.ndarray) -> ImprintedAnswer:
        """The answer for one ``(D,)`` embedding.

        Raises:
            ModelError: If the embedding has the wrong size.
        """
        vector = np.asarray(embedding, np.float64).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ModelError(f"embedding has {vector.shape[0]} values, the classes {self.dim}")
        logits = self.scale * self.scores(vector)
        exp = np.exp(logits - logits.max())
        return ImprintedAnswer(
            probabilities=(exp / exp.sum()).astype(np.float32),
            similarities=(self.prototypes.astype(np.float64) @ _unit(vector)).astype(np.float32),
            labels=self.labels,
            thresholds=self.thresholds,
        )


def _threshold(genuine: np.ndarray, impostor: np.ndarray) -> float:
    low = float(genuine.min())
    if impostor.size == 0:
        return low - (1.0 - low)
    high = float(impostor.max())
    return (low + high) / 2 if low > high else low


def _genuine(views: Sequence[np.ndarray]) -> np.ndarray:
    """Own-class similarities of one class's examples (each ``(V, D)``, unit rows)."""
    if len(views) == 1:
        return views[0][1:] @ views[0][0]
    scores = []
    for index, example in enumerate(views):
        others = [v for i, v in enumerate(views) if i != index]
        scores.append(example @ _unit(np.mean([_weighted_mean(v) for v in others], axis=0)))
    return np.concatenate(scores)


def _refine(
    weights: np.ndarray,
    trainable: np.ndarray,
    samples: np.ndarray,
    targets: np.ndarray,
    steps: int,
    scale: float,
    learning_rate: float,
) -> np.ndarray:
    """Gradient descent on the softmax cross-entropy of ``samples`` (unit rows) under the
    logits ``scale * (x.w_c - |w_c|^2 / 2)``, moving only the ``trainable`` rows."""
    weights = weights.copy()
    one_hot = np.zeros((len(samples), len(weights)))
    one_hot[np.arange(len(samples)), targets] = 1.0
    for _ in range(steps):
        logits = scale * (samples @ weights.T - 0.5 * (weights**2).sum(axis=1))
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        residual = probabilities - one_hot  # (N, C); d logit_c / d w_c = scale * (x - w_c)
        gradient = scale * (residual.T @ samples - residual.sum(axis=0)[:, None] * weights)
        weights[trainable] -= learning_rate * gradient[trainable] / len(samples)
    return weights


def _class_means(views: Mapping[str, list[np.ndarray]], *, unit: bool) -> np.ndarray:
    means = np.stack([np.mean([_weighted_mean(v) for v in views[c]], axis=0) for c in views])
    return _unit(means) if unit else means


def build_head(
    examples: Mapping[str, Sequence[np.ndarray]],
    *,
    base: ImprintedHead | None = None,
    refine_steps: int = 0,
    scale: float = DEFAULT_SCALE,
    learning_rate: float = 0.05,
) -> ImprintedHead:
    """Imprints one class per key of ``examples``, after the classes of ``base``.

    Args:
        examples: Class name -> one ``(V, D)`` array per example picture (its views'
            embeddings, the first one the picture itself).
        base: Classes learned before; their rows, thresholds and the centre are kept bit
            for bit.
        refine_steps: Gradient steps on the new classes' weights (0: pure imprinting).
        scale: Score-to-logit scale (``base``'s when given).
        learning_rate: Step size of the refinement.

    Raises:
        ConfigError: If a class has no example, a class exists in ``base``, or an option
            is out of range.
        ModelError: If the embeddings' sizes differ from each other or from ``base``.
    """
    if refine_steps < 0:
        raise ConfigError(f"refine_steps must be >= 0, got {refine_steps}")
    if not examples:
        raise ConfigError("no classes to learn")
    if base is not None:
        scale = base.scale
        taken = sorted(set(examples) & set(base.labels))
        if taken:
            raise ConfigError(
                f"class {taken[0]!r} is already learned ({', '.join(base.labels)}); "
                f"give new classes, or learn into a new --out"
            )
    raw: dict[str, list[np.ndarray]] = {}
    dims = set() if base is None else {base.dim}
    for label, arrays in examples.items():
        if not arrays:
            raise ConfigError(f"class {label!r} has no examples")
        raw[label] = [np.atleast_2d(np.asarray(a, np.float64)) for a in arrays]
        dims.update(v.shape[1] for v in raw[label])
    if len(dims) != 1:
        raise ModelError(f"embeddings of different sizes: {sorted(dims)}")
    if base is not None:
        centre = base.centre.astype(np.float64)
    elif len(raw) >= 2:
        centre = np.mean([_weighted_mean(v) for arrays in raw.values() for v in arrays], axis=0)
    else:  # one class alone: its own mean would cancel it
        centre = np.zeros(dims.pop())
    new_labels = tuple(raw)
    centred = {c: [_unit(v - centre) for v in raw[c]] for c in new_labels}
    plain = {c: [_unit(v) for v in raw[c]] for c in new_labels}
    weights, prototypes = _class_means(centred, unit=False), _class_means(plain, unit=True)
    old_count = 0 if base is None else len(base.labels)
    if base is not None:
        weights = np.concatenate([base.weights.astype(np.float64), weights])
        prototypes = np.concatenate([base.prototypes.astype(np.float64), prototypes])
    if refine_steps:
        samples = np.concatenate([np.concatenate(centred[c]) for c in new_labels])
        targets = np.concatenate(
            [
                np.full(sum(len(v) for v in centred[c]), old_count + i)
                for i, c in enumerate(new_labels)
            ]
        )
        trainable = np.arange(old_count, len(weights))
        weights = _refine(weights, trainable, samples, targets, refine_steps, scale, learning_rate)
    thresholds = []
    for index, label in enumerate(new_labels):
        row = prototypes[old_count + index]
        others = [v for c in new_labels if c != label for v in plain[c]]
        if old_count:  # the examples of earlier classes are gone: their prototypes stand in
            others.append(prototypes[:old_count])
        impostor = np.concatenate(others) @ row if others else np.zeros(0)
        thresholds.append(_threshold(_genuine(plain[label]), impostor))
    weights, prototypes = weights.astype(np.float32), prototypes.astype(np.float32)
    shots = tuple(len(raw[c]) for c in new_labels)
    refined = (refine_steps,) * len(new_labels)
    if base is None:
        return ImprintedHead(
            new_labels, weights, prototypes, np.asarray(thresholds), shots, scale,
            refined, centre.astype(np.float32),
        )  # fmt: skip
    weights[:old_count], prototypes[:old_count] = base.weights, base.prototypes
    return ImprintedHead(
        labels=base.labels + new_labels,
        weights=weights,
        prototypes=prototypes,
        thresholds=np.concatenate([base.thresholds, np.asarray(thresholds, np.float32)]),
        shots=base.shots + shots,
        scale=scale,
        refine_steps=base.refine_steps + refined,
        centre=base.centre,
    )


def read_class_folders(root: str | Path) -> dict[str, list[Path]]:
    """The example pictures of an image-folder tree: class name -> its image files.

    ``root`` holds one sub-folder per class (``root/<class>/*.jpg``); a tree that ``ubiq
    data`` writes (``root/train/<class>/...``) is read from its ``train`` split.

    Raises:
        DatasetError: If ``root`` is missing, has no class folders, or a class folder has
            no images (naming it).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    from ubiq.models.datasets.yolo import IMAGE_SUFFIXES

    if (root / "train").is_dir() and any(p.is_dir() for p in (root / "train").iterdir()):
        root = root / "train"
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root} has no class folders (expected {root}/<class>/*.jpg)")
    classes: dict[str, list[Path]] = {}
    for folder in folders:
        images = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise DatasetError(f"class folder {folder} has no images")
        classes[folder.name] = images
    return classes


def read_image(path: Path) -> np.ndarray:
    """A BGR picture from a file.

    Raises:
        DatasetError: If the file does not decode as an image, naming it.
    """
    data = np.fromfile(str(path), np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DatasetError(f"cannot decode image {path}")
    return image


def embed_examples(
    embed: Callable[[np.ndarray], np.ndarray],
    classes: Mapping[str, Sequence[Path]],
    progress: Callable[[int], None] | None = None,
    *,
    mirror: bool = False,
) -> dict[str, list[np.ndarray]]:
    """Embeds every example picture's views: class -> one ``(V, D)`` array per picture.

    Every file is decoded before the first is embedded, so an undecodable one fails fast.

    Raises:
        DatasetError: If a file does not decode, naming it.
    """
    images = {label: [read_image(p) for p in paths] for label, paths in classes.items()}
    examples: dict[str, list[np.ndarray]] = {}
    for label, pictures in images.items():
        examples[label] = []
        for picture in pictures:
            views = example_views(picture, mirror=mirror)
            examples[label].append(np.stack([embed(view) for view in views]))
            if progress is not None:
                progress(1)
    return examples


def _model_files(path: Path) -> list[Path]:
    files = [path]
    if path.suffix.lower() == ".xml":
        files.append(path.with_suffix(".bin"))
    return files


def save_learned(
    out: str | Path,
    head: ImprintedHead,
    embedder_path: Path,
    embedder_manifest: ModelManifest,
    *,
    embedder_info: Mapping[str, object] | None = None,
    views: Sequence[str] = ("image", "centre 80%"),
) -> Path:
    """Writes a learned classifier folder, replacing ``out`` only once it is complete.

    The folder holds ``model.<suffix>`` (the embedder, copied), ``model.json`` (its
    manifest: task ``classify``, decoder ``imprint``) and ``classes.npz``.

    Returns:
        The manifest path.
    """
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model_path = staging / f"model{embedder_path.suffix.lower()}"
        for source in _model_files(embedder_path):
            shutil.copyfile(source, model_path.with_suffix(source.suffix.lower()))
        np.savez(
            staging / WEIGHTS_FILE,
            weights=head.weights,
            prototypes=head.prototypes,
            thresholds=head.thresholds,
            centre=head.centre,
        )
        info = dict(embedder_info or {})
        info.setdefault("name", embedder_manifest.name)
        info.setdefault("sha256", file_sha256(embedder_path))
        params = {
            "weights": WEIGHTS_FILE,
            "dim": head.dim,
            "scale": head.scale,
            "unknown_label": UNKNOWN,
            "thresholds": [round(float(t), 6) for t in head.thresholds],
            "threshold_rule": THRESHOLD_RULE,
            "shots": dict(zip(head.labels, head.shots)),
            "refine_steps": dict(zip(head.labels, head.refine_steps)),
            "views": list(views),
            "centred": bool(np.any(head.centre)),
            "embedder": info,
            "learned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest = embedder_manifest.with_updates(
            name=out.name,
            task="classify",
            decoder=DecoderSpec("imprint", params),
            labels=head.labels,
            source=f"ubiq learn (imprinted on {embedder_path.name})",
        )
        manifest.save(manifest_path_for(model_path))
        replace_dir(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest_path_for(out / model_path.name)


def load_head(model_path: Path, manifest: ModelManifest) -> ImprintedHead:
    """The head of a learned classifier from its manifest and weights file.

    Raises:
        ModelError: If the weights file is missing, corrupt or disagrees with the labels.
    """
    params = manifest.decoder.params
    weights_path = model_path.parent / str(params.get("weights", WEIGHTS_FILE))
    try:
        with np.load(weights_path) as data:
            weights, thresholds = data["weights"], data["thresholds"]
            prototypes, centre = data["prototypes"], data["centre"]
    except (OSError, KeyError, ValueError) as error:
        raise ModelError(f"cannot read the learned classes {weights_path}: {error}") from error
    shots = params.get("shots", {})
    steps = params.get("refine_steps", {})
    try:
        return ImprintedHead(
            labels=manifest.labels,
            weights=weights,
            prototypes=prototypes,
            thresholds=thresholds,
            shots=tuple(int(shots.get(label, 0)) for label in manifest.labels),
            scale=float(params.get("scale", DEFAULT_SCALE)),
            refine_steps=tuple(int(steps.get(label, 0)) for label in manifest.labels),
            centre=centre,
        )
    except ModelError as error:
        raise ModelError(f"{weights_path}: {error}") from error


def describe(head: ImprintedHead) -> str:
    """One line per class: shots and threshold."""
    return "\n".join(
        f"  {label}: {shots} picture{'s' * (shots != 1)}, unknown below cosine {threshold:.3f}"
        for label, shots, threshold in zip(head.labels, head.shots, head.thresholds)
    )


@dataclass
class ImprintedClassifier(Classifier):
    """A learned classifier folder run as a :class:`~ubiq.models.runtime.tasks.Classifier`:
    calling it on a BGR image gives an :class:`ImprintedAnswer` (``label`` is
    :data:`UNKNOWN` below the class's threshold). ``Classifier.load(OUT)`` returns one."""

    head: ImprintedHead | None = None

    @classmethod
    def from_opened(
        cls, path: Path, runtime: Backend, manifest: ModelManifest
    ) -> ImprintedClassifier:
        """Wraps an opened embedder whose manifest is an ``imprint`` classifier's.

        Raises:
            ModelError: If the weights are unreadable or their size differs from the
                embedder's output.
        """
        head = load_head(path, manifest)
        size = vector_size(runtime.outputs[0].shape) if len(runtime.outputs) == 1 else None
        if size is not None and size != head.dim:
            raise ModelError(
                f"{path.parent.name}: the learned classes expect {head.dim} values, "
                f"{path.name} outputs {size}"
            )
        return cls(path=path, backend=runtime, manifest=manifest, head=head)

    def embedding(self, tensor: np.ndarray) -> np.ndarray:
        """The ``(D,)`` embedding of a prepared input tensor."""
        outputs = self.backend.run({self.manifest.input.name: tensor})
        return np.asarray(outputs[self.backend.outputs[0].name], np.float32).reshape(-1)

    def scores(self, tensor: np.ndarray) -> np.ndarray:
        """The ``(C,)`` class probabilities of a prepared input tensor (as every
        classifier's scores, for ``ubiq val``)."""
        assert self.head is not None
        return self.head.answer(self.embedding(tensor)).probabilities

    def probabilities(self, scores: np.ndarray) -> ImprintedAnswer:  # type: ignore[override]
        """The answer for an embedding."""
        assert self.head is not None
        return self.head.answer(scores)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """The ``(D,)`` embedding of one BGR image."""
        return self.embedding(self.prepare(image))

    def __call__(self, image: np.ndarray) -> ImprintedAnswer:  # type: ignore[override]
        """The answer for one ``(H, W, 3)`` uint8 BGR image."""
        return self.probabilities(self.embed(image))
