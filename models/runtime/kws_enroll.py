"""Voice enrolment for keyword models: weight imprinting on the keyword embedding, in numpy.

A user says a phrase (the wake phrase, a command, or a phrase the model never learned) a
few times; each utterance's embedding (the model's penultimate vector,
:meth:`~ubiq.models.runtime.tasks.KeywordModel.embed`) is imprinted as Qi et al. do (and
:mod:`~ubiq.models.runtime.imprint` for pictures): the phrase's template is the normalised
mean of its normalised examples, compared by cosine. For speech:

- **Centred embeddings.** Every utterance the model does not know lands near one "not a
  command" region, so raw cosines between any of a new voice's utterances are close to 1
  (measured: the raw cosine does not separate a voice's phrases from its other sentences).
  Each embedding is first moved by the *voice centre*: the mean embedding of the user's
  enrolment audio played backwards and shuffled in quarters (the same voice and sounds,
  no phrase).
- **Views and impostors from the user's own audio.** Every utterance counts as three
  views (itself, with white noise at 20 dB and at 10 dB SNR); the backwards and shuffled
  copies, and the other enrolled phrases, are the impostors each threshold is chosen
  against (:data:`THRESHOLD_RULE`).

At run time the templates combine with the model's own answer (:data:`COMBINE_RULE`,
:meth:`EnrolledVoices.match`, used by
:class:`~ubiq.pipelines.speech.recognize.ModelCommandRecognizer`). ``--add`` appends
phrases with the stored centre, so the phrases enrolled before answer as they did.
``benchmarks/kws_enroll.py`` measures it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.manifest import DecoderSpec, ModelManifest, manifest_path_for
from ubiq.models.runtime.onnx_outputs import EMBEDDING_OUTPUT, embedding_model
from ubiq.models.runtime.tasks import KeywordModel
from ubiq.paths import file_sha256, replace_dir

__all__ = [
    "COMBINE_RULE",
    "ENROLLED_KEY",
    "THRESHOLD_RULE",
    "EnrolledVoices",
    "VoiceMatch",
    "enrol",
    "load_enrolled",
    "negative_views",
    "phrase_of",
    "save_enrolled",
    "utterance_views",
]

ENROLLED_KEY = "enrolled"
"""The decoder parameter of a kws manifest that holds the enrolled voices."""
WEIGHTS_FILE = "voices.npz"
COMMANDS_FILE = "commands.yaml"
VIEW_SNRS_DB = (20.0, 10.0)
COMBINE_RULE = (
    "an utterance whose centred embedding reaches an enrolled phrase's threshold (cosine to "
    "its template) is that phrase, with the cosine as confidence; otherwise the model's own "
    "answer and threshold apply unchanged"
)
THRESHOLD_FLOOR = 0.75
THRESHOLD_MARGIN = 0.15
THRESHOLD_RULE = (
    f"per phrase: the highest cosine to its template of any impostor (the user's enrolment "
    f"utterances backwards and shuffled in quarters, and every view of the other phrases "
    f"enrolled with it) plus {THRESHOLD_MARGIN}, at least {THRESHOLD_FLOOR}"
)


def phrase_of(label: str) -> str:
    """The phrase an enrolled class stands for: its name up to an ``@`` (``"hey ubiq@ana"``
    is a second speaker's ``"hey ubiq"``)."""
    text = re.sub(r"[^a-z0-9' ]+", " ", label.partition("@")[0].lower().replace("-", " "))
    return " ".join(text.split())  # as ubiq.pipelines.speech.commands.normalize_text


def _with_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    loud = samples[np.abs(samples) > 0.1 * float(np.abs(samples).max() or 1.0)]
    power = float(np.mean(loud.astype(np.float64) ** 2)) if loud.size else 0.0
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(samples))
    return np.clip(samples + noise, -1.0, 1.0).astype(np.float32)


def utterance_views(samples: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The views of one enrolment utterance: itself and with white noise at each of
    :data:`VIEW_SNRS_DB` (seeded, so enrolment is repeatable)."""
    samples = np.asarray(samples, np.float32)
    rng = np.random.default_rng(seed)
    return [samples, *(_with_noise(samples, snr, rng) for snr in VIEW_SNRS_DB)]


def negative_views(samples: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Impostors made of one utterance: played backwards, shuffled in quarters, and the
    backwards copy with noise at the lowest view SNR."""
    samples = np.asarray(samples, np.float32)
    rng = np.random.default_rng(seed + 1)
    backwards = np.ascontiguousarray(samples[::-1])
    parts = np.array_split(samples, 4)
    shuffled = np.concatenate([parts[i] for i in (2, 0, 3, 1)])
    return [backwards, shuffled, _with_noise(backwards, VIEW_SNRS_DB[-1], rng)]


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, np.float64)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


@dataclass(frozen=True)
class VoiceMatch:
    """How an embedding compares with the enrolled templates.

    Attributes:
        label: The closest enrolled class (``"hey ubiq"``, ``"hey ubiq@ana"``).
        phrase: Its phrase, or ``None`` when the similarity is below its threshold.
        similarity: Cosine of the centred embedding to that class's template.
        threshold: That class's threshold.
    """

    label: str
    phrase: str | None
    similarity: float
    threshold: float


@dataclass(frozen=True)
class EnrolledVoices:
    """Imprinted phrase templates over a keyword model's centred embedding.

    Attributes:
        labels: Enrolled classes (phrases; ``"phrase@who"`` for a further speaker).
        weights: ``(C, D)`` unit templates.
        thresholds: ``(C,)`` lowest accepted cosine per class.
        centre: ``(D,)`` voice centre subtracted from every embedding.
        shots: Utterances each class was enrolled from.
    """

    labels: tuple[str, ...]
    weights: np.ndarray
    thresholds: np.ndarray
    centre: np.ndarray
    shots: tuple[int, ...]

    def __post_init__(self) -> None:
        count = len(self.labels)
        weights = np.asarray(self.weights, np.float32)
        if weights.ndim != 2 or weights.shape[0] != count:
            raise ModelError(f"enrolled templates must be ({count}, D), got {weights.shape}")
        thresholds = np.asarray(self.thresholds, np.float32).reshape(-1)
        centre = np.asarray(self.centre, np.float32).reshape(-1)
        if thresholds.shape != (count,) or len(self.shots) != count:
            raise ModelError("enrolled thresholds and shots must have one value per class")
        if centre.shape != (weights.shape[1],):
            raise ModelError(f"voice centre has {centre.size} values, templates {weights.shape[1]}")
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "centre", centre)

    @property
    def dim(self) -> int:
        """Values per embedding."""
        return int(self.weights.shape[1])

    @property
    def phrases(self) -> tuple[str, ...]:
        """The phrase of each enrolled class."""
        return tuple(phrase_of(label) for label in self.labels)

    def similarities(self, embedding: np.ndarray) -> np.ndarray:
        """``(C,)`` cosines of one centred ``(D,)`` embedding to the templates.

        Raises:
            ModelError: If the embedding's size differs from the templates'.
        """
        vector = np.asarray(embedding, np.float64).reshape(-1)
        if vector.shape != (self.dim,):
            raise ModelError(f"embedding has {vector.size} values, the enrolled voices {self.dim}")
        return self.weights.astype(np.float64) @ _unit(vector - self.centre)

    def match(self, embedding: np.ndarray) -> VoiceMatch:
        """The closest template of one ``(D,)`` embedding, and whether it is accepted.

        Raises:
            ModelError: If the embedding's size differs from the templates'.
        """
        similarities = self.similarities(embedding)
        index = int(np.argmax(similarities))
        similarity, threshold = float(similarities[index]), float(self.thresholds[index])
        label = self.labels[index]
        accepted = similarity >= threshold
        return VoiceMatch(label, phrase_of(label) if accepted else None, similarity, threshold)


def _embeddings(model: KeywordModel, clips: Sequence[np.ndarray]) -> np.ndarray:
    rate = model.sample_rate
    return np.stack([model.embed(clip, rate).astype(np.float64) for clip in clips])


def _rows(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    centred = np.asarray(vectors, np.float64) - centre
    return centred / np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-12)


def enrol(
    model: KeywordModel,
    utterances: Mapping[str, Sequence[np.ndarray]],
    *,
    base: EnrolledVoices | None = None,
) -> EnrolledVoices:
    """Imprints one template per phrase from the user's utterances.

    Args:
        model: The keyword model whose embedding is used.
        utterances: Class name (a phrase, or ``"phrase@who"``) -> the user's utterances,
            each ``(N,)`` float32 at ``model.sample_rate``, cut to the speech as ``ubiq
            listen``'s voice-activity detector cuts it.
        base: Voices enrolled before: their templates, thresholds and centre are kept bit
            for bit, the new classes are appended.

    Raises:
        ConfigError: If there is nothing to enrol, a class has no utterance, or a class is
            enrolled in ``base`` already.
        ModelError: If the model has no embedding to expose.
    """
    if not utterances:
        raise ConfigError("no phrases to enrol")
    taken = sorted(set(utterances) & set(base.labels if base is not None else ()))
    if taken:
        raise ConfigError(
            f"phrase {taken[0]!r} is enrolled already; name a further speaker's folder "
            f"'{taken[0]}@NAME', or enrol into a new --out"
        )
    examples: dict[str, np.ndarray] = {}
    negatives: list[np.ndarray] = []
    for label, clips in utterances.items():
        if not clips:
            raise ConfigError(f"phrase {label!r} has no utterances")
        views = [_embeddings(model, utterance_views(clip, seed=n)) for n, clip in enumerate(clips)]
        examples[label] = np.concatenate(views)
        negatives += [
            _embeddings(model, negative_views(clip, seed=n)) for n, clip in enumerate(clips)
        ]
    impostors = np.concatenate(negatives)
    centre = base.centre.astype(np.float64) if base is not None else impostors.mean(axis=0)
    rows = {label: _rows(vectors, centre) for label, vectors in examples.items()}
    labels = tuple(rows)
    weights = np.stack([_unit(rows[label].mean(axis=0)) for label in labels])
    thresholds = []
    for index, label in enumerate(labels):
        others = [rows[other] for other in labels if other != label]
        against = np.concatenate([_rows(impostors, centre), *others]) @ weights[index]
        thresholds.append(max(THRESHOLD_FLOOR, float(against.max()) + THRESHOLD_MARGIN))
    shots = tuple(len(utterances[label]) for label in labels)
    if base is None:
        return EnrolledVoices(labels, weights, np.asarray(thresholds), centre, shots)
    return EnrolledVoices(
        base.labels + labels,
        np.concatenate([base.weights, weights.astype(np.float32)]),
        np.concatenate([base.thresholds, np.asarray(thresholds, np.float32)]),
        base.centre,
        base.shots + shots,
    )


def save_enrolled(
    out: str | Path,
    model: KeywordModel,
    voices: EnrolledVoices,
    *,
    commands_yaml: str | None = None,
    embedder_info: Mapping[str, object] | None = None,
) -> Path:
    """Writes an enrolled keyword model folder, replacing ``out`` only once it is complete.

    The folder holds ``model.onnx`` (the keyword model with its ``embedding`` output added,
    its logits unchanged), ``model.json`` (its manifest, with the enrolled voices under
    the decoder's :data:`ENROLLED_KEY`), ``voices.npz`` (templates, thresholds, centre)
    and, when given, ``commands.yaml`` (what ``ubiq listen --model OUT`` listens for).

    Returns:
        The manifest path.

    Raises:
        ModelError: If the model is not ONNX or has no embedding to expose.
    """
    if model.path.suffix.lower() != ".onnx":
        raise ModelError(f"{model.path.name}: enrolled voices need the ONNX export of the model")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model_path = staging / "model.onnx"
        model_path.write_bytes(embedding_model(model.path.read_bytes()))
        np.savez(
            staging / WEIGHTS_FILE,
            weights=voices.weights,
            thresholds=voices.thresholds,
            centre=voices.centre,
        )
        if commands_yaml is not None:
            (staging / COMMANDS_FILE).write_text(commands_yaml, encoding="utf-8")
        info = dict(embedder_info or {})
        info.setdefault("name", model.manifest.name)
        info.setdefault("sha256", file_sha256(model.path))
        enrolled = {
            "weights": WEIGHTS_FILE,
            "output": EMBEDDING_OUTPUT,
            "labels": list(voices.labels),
            "phrases": list(voices.phrases),
            "dim": voices.dim,
            "thresholds": [round(float(t), 6) for t in voices.thresholds],
            "threshold_rule": THRESHOLD_RULE,
            "centre": "mean embedding of the user's enrolment utterances backwards and shuffled",
            "combine_rule": COMBINE_RULE,
            "views": ["utterance", *(f"white noise {snr:g} dB SNR" for snr in VIEW_SNRS_DB)],
            "shots": dict(zip(voices.labels, voices.shots)),
            "commands": COMMANDS_FILE if commands_yaml is not None else None,
            "embedder": info,
            "learned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        params = {**model.manifest.decoder.params, ENROLLED_KEY: enrolled}
        manifest = model.manifest.with_updates(
            name=out.name,
            format="onnx",
            decoder=DecoderSpec(model.manifest.decoder.name, params),
            source=f"ubiq learn --task kws (voices enrolled on {model.path.name})",
            sha256="",
        )
        manifest.save(manifest_path_for(model_path))
        replace_dir(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest_path_for(out / "model.onnx")


def load_enrolled(model_path: Path, manifest: ModelManifest) -> EnrolledVoices | None:
    """The enrolled voices of a keyword model folder, or ``None`` for a plain model.

    Raises:
        ModelError: If the manifest names voices whose file is missing, corrupt or
            disagrees with it.
    """
    params = manifest.decoder.params.get(ENROLLED_KEY)
    if not params:
        return None
    if not isinstance(params, Mapping) or not isinstance(params.get("labels"), list):
        raise ModelError(f"{model_path}: the enrolled voices in its manifest are malformed")
    weights_path = model_path.parent / str(params.get("weights", WEIGHTS_FILE))
    try:
        with np.load(weights_path) as data:
            weights, thresholds, centre = data["weights"], data["thresholds"], data["centre"]
    except (OSError, KeyError, ValueError) as error:
        raise ModelError(f"cannot read the enrolled voices {weights_path}: {error}") from error
    labels = tuple(str(label) for label in params["labels"])
    shots = params.get("shots", {})
    try:
        return EnrolledVoices(
            labels, weights, thresholds, centre, tuple(int(shots.get(x, 0)) for x in labels)
        )
    except ModelError as error:
        raise ModelError(f"{weights_path}: {error}") from error
