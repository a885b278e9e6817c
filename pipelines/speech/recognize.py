"""Command recognisers: one utterance in, a command phrase (or nothing) out.

Three engines sit behind :class:`CommandRecognizer`:

* :class:`~ubiq.pipelines.speech.phone_commands.PhoneCommandRecognizer` (``phones``, the
  default without a model) scores each phrase's phones, spelled by espeak-ng, on the
  posteriors of the phone recogniser ubiq ships: any command list, no training, a threshold
  calibrated for the list at first start.

* :class:`ModelCommandRecognizer` runs a command classifier trained by ``ubiq train --task
  kws --commands FILE`` (classes: the phrases, the wake phrase, ``_unknown_`` and
  ``_silence_``) on any backend ubiq has (ONNX Runtime, LiteRT). It rejects speech that
  is not a command three ways: the ``_unknown_`` class (trained on everyday sentences, parts
  of commands and near-misses), a probability threshold, and a length check (an utterance
  much longer than the model's clip is not one of its phrases). Where training chose one
  (``verify_threshold`` in its manifest), a command it accepts must also pass the phone
  check: the shipped phone recogniser's score of that phrase's spelling, which a phrase one
  word away fails (:mod:`~ubiq.models.toolchain.train.kws_calibrate`; an enrolled voice's
  match, below, is taken without it). Where training also recorded the zero-wait path's
  threshold for the list (``phone_threshold``), the phone recogniser on its own hears a
  command first, as ``ubiq listen --commands`` without a model would, and the model decides
  the rest: a trained model then adds what it hears to what needs no training (the phone
  recogniser generalises to voices better than a classifier trained on a dozen). A model
  folder written by ``ubiq learn --task kws`` also holds the user's enrolled voice
  templates: an utterance close enough to one is that phrase
  (:data:`~ubiq.models.runtime.kws_enroll.COMBINE_RULE`), anything else gets the model's
  own answer.
* :class:`SphinxCommandRecognizer` decodes the utterance with PocketSphinx against a JSGF
  grammar of exactly the allowed phrases. It needs no training, but a grammar decoder
  forces any speech onto its closest phrase; its rejection is a posterior threshold,
  which is weak (the speech benchmark measures how weak).

Both take float32 mono 16 kHz samples and return a :class:`Recognition`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.pipelines.speech.commands import CommandPhrase, CommandSet

__all__ = [
    "CommandRecognizer",
    "ModelCommandRecognizer",
    "Recognition",
    "SphinxCommandRecognizer",
    "open_recognizer",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
ENGINES = ("auto", "model", "phones", "pocketsphinx")
"""Command engines :func:`open_recognizer` knows."""
DEFAULT_THRESHOLD = 0.6
"""Lowest confidence a command model accepts when neither the caller nor its manifest says."""
MODEL_CONTEXT_MS = 30.0
"""Audio around the speech a command model is given (the VAD's default padding): its
threshold was chosen on trimmed speech, and wider context let more near misses through."""


@dataclass(frozen=True)
class Recognition:
    """What a recogniser made of one utterance.

    Attributes:
        text: The phrase heard, or ``""`` when the utterance is not a command.
        phrase: The command it is (intent and slots), or ``None``.
        is_wake: The utterance is the wake phrase.
        confidence: The engine's confidence in ``text`` (0 to 1).
        best: The engine's best guess even when rejected (for reports and debugging).
    """

    text: str
    phrase: CommandPhrase | None
    is_wake: bool
    confidence: float
    best: str = ""

    @property
    def accepted(self) -> bool:
        return bool(self.text)


class CommandRecognizer(Protocol):
    """Recognises one utterance against a command set."""

    name: str
    commands: CommandSet

    def recognize(self, samples: np.ndarray) -> Recognition: ...


def _result(commands: CommandSet, text: str, confidence: float, accept: bool) -> Recognition:
    if not accept:
        return Recognition("", None, False, confidence, text)
    if commands.wake and text == commands.wake:
        return Recognition(text, None, True, confidence, text)
    phrase = commands.lookup(text)
    if phrase is None:
        return Recognition("", None, False, confidence, text)
    return Recognition(text, phrase, False, confidence, text)


class ModelCommandRecognizer:
    """A trained command classifier (``ubiq train --task kws --commands FILE``).

    Args:
        model: The exported model (``.onnx`` or ``.tflite``) with its manifest, or a zoo
            name.
        commands: The command set; every phrase (and the wake phrase) must be a class.
        threshold: Lowest softmax probability accepted as a command (``None``: the
            ``threshold`` in the model's manifest, chosen on its validation voices in noise,
            else :data:`DEFAULT_THRESHOLD`).
        threads: Inference threads.
        max_extra_s: An utterance longer than the model's clip by more than this is
            rejected without running the model.
        verify: Apply the phone check when the manifest has a ``verify_threshold``, and
            let the phone recogniser hear commands first when it has a ``phone_threshold``
            (without espeak-ng both are skipped with a warning).

    Raises:
        ModelError: If the model is missing, corrupt, not a kws model or has no manifest.
        ConfigError: If a phrase of ``commands`` is not one of the model's classes, or the
            threshold is outside ``(0, 1)``.
    """

    name = "model"

    def __init__(
        self,
        model: str | Path,
        commands: CommandSet,
        *,
        threshold: float | None = None,
        threads: int | None = 1,
        max_extra_s: float = 0.75,
        verify: bool = True,
    ) -> None:
        from ubiq.manifest import MANIFEST_METADATA_KEY, ModelManifest, manifest_path_for
        from ubiq.models.runtime.audio_features import LogMelOptions
        from ubiq.models.runtime.backend import load_backend

        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        from ubiq.models.runtime.model import resolve_model_path

        path = resolve_model_path(model)  # a file, or a zoo name such as ubiq-commands-demo
        self.backend = load_backend(path, num_threads=threads, device="cpu")
        sidecar = manifest_path_for(path)
        if sidecar.is_file():
            manifest = ModelManifest.load(sidecar)
        elif MANIFEST_METADATA_KEY in self.backend.metadata:
            import json

            manifest = ModelManifest.from_dict(
                json.loads(self.backend.metadata[MANIFEST_METADATA_KEY])
            )
        else:
            raise ModelError(f"{path} has no ubiq manifest (export it with `ubiq export`)")
        if manifest.task != "kws" or "features" not in manifest.decoder.params:
            raise ModelError(f"{path} is a {manifest.task!r} model, not a command (kws) model")
        try:
            self.features = LogMelOptions.from_dict(manifest.decoder.params["features"])
        except (TypeError, ValueError) as error:
            raise ModelError(f"{path}: bad feature settings in its manifest: {error}") from error
        if self.features.sample_rate != SAMPLE_RATE:
            raise ModelError(f"{path} expects {self.features.sample_rate} Hz audio, not 16000")
        self.labels = tuple(manifest.labels)
        from ubiq.models.runtime.kws_enroll import load_enrolled
        from ubiq.models.runtime.onnx_outputs import EMBEDDING_OUTPUT

        self.voices = load_enrolled(path, manifest)
        if self.voices is not None and EMBEDDING_OUTPUT not in [
            o.name for o in self.backend.outputs
        ]:
            raise ModelError(f"{path} has enrolled voices but no {EMBEDDING_OUTPUT!r} output")
        known = set(self.labels) | set(self.voices.phrases if self.voices is not None else ())
        wanted = [*commands.texts, *([commands.wake] if commands.wake else [])]
        missing = [p for p in wanted if p not in known]
        if missing:
            raise ConfigError(
                f"{path} was trained for other commands: no class for {missing[:5]}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                + "; train one with `ubiq train --task kws --commands FILE`"
            )
        self.commands = commands
        if threshold is None:
            threshold = manifest.decoder.params.get("threshold", DEFAULT_THRESHOLD)
            if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
                raise ModelError(f"{path}: threshold in its manifest must be in (0, 1)")
        self.threshold = float(threshold)
        self.verify_threshold = manifest.decoder.params.get("verify_threshold")
        if self.verify_threshold is not None and (
            not isinstance(self.verify_threshold, (int, float))
            or not 0.0 <= self.verify_threshold < 1.0
        ):
            raise ModelError(f"{path}: verify_threshold in its manifest must be in [0, 1)")
        phone_threshold = manifest.decoder.params.get("phone_threshold")
        if phone_threshold is not None and (
            not isinstance(phone_threshold, (int, float)) or not 0.0 < phone_threshold < 1.0
        ):
            raise ModelError(f"{path}: phone_threshold in its manifest must be in (0, 1)")
        self.checker = None
        if verify and (self.verify_threshold or phone_threshold is not None):
            from ubiq.pipelines.speech.phone_commands import PhoneCommandRecognizer

            try:  # its own threshold is the phone recogniser's; the check's is separate
                self.checker = PhoneCommandRecognizer(
                    commands,
                    threshold=float(phone_threshold or self.verify_threshold),
                    threads=threads,
                )
            except (BackendUnavailable, ConfigError, ModelError) as error:
                logger.warning("commands: no phone check (%s)", error)
        # Recorded by training: the zero-wait path's threshold for this list, at which the
        # phone recogniser on its own hears commands before the model decides.
        self.phone_threshold = (
            float(phone_threshold)
            if self.checker is not None and phone_threshold is not None
            else None
        )
        self.max_samples = int((self.features.clip_seconds + max_extra_s) * SAMPLE_RATE)
        self.input_name = self.backend.inputs[0].name
        self.path = path

    def _run(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        features = self.features.model_input(samples)  # (1, 1, n_mels, frames)
        return self.backend.run({self.input_name: features})

    def _softmax(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        logits = np.asarray(outputs[self.backend.outputs[0].name], np.float64).reshape(-1)
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Class probabilities of one utterance (centred in the model's clip)."""
        return self._softmax(self._run(samples))

    @property
    def context_ms(self) -> float:
        """Audio wanted around the speech: the phone recogniser's when it listens too (the
        model itself gets :data:`MODEL_CONTEXT_MS` of it, see :meth:`recognize_padded`)."""
        return self.checker.context_ms if self.phone_threshold is not None else 0.0

    def recognize(self, samples: np.ndarray) -> Recognition:
        return self.recognize_padded(samples, 0.0, 0.0)

    def recognize_padded(self, samples: np.ndarray, lead_s: float, trail_s: float) -> Recognition:
        """Recognises an utterance with ``lead_s`` and ``trail_s`` seconds of audio before
        and after its speech (what the VAD kept, :attr:`context_ms` at most).

        The phone recogniser, when the manifest gives it a ``phone_threshold``, hears the
        whole and accepts its best phrase at that threshold; otherwise the model decides
        on the speech with at most :data:`MODEL_CONTEXT_MS` around it (what it was
        calibrated on), and the phone check (``verify_threshold``) must agree.
        """
        keep = int(MODEL_CONTEXT_MS / 1e3 * SAMPLE_RATE)
        head = max(0, int(lead_s * SAMPLE_RATE) - keep)
        tail = max(0, int(trail_s * SAMPLE_RATE) - keep)
        speech = samples[head : len(samples) - tail] if head + tail < len(samples) else samples
        if len(speech) > self.max_samples:
            return Recognition("", None, False, 0.0, "")
        outputs = self._run(speech)
        if self.voices is not None:
            from ubiq.models.runtime.onnx_outputs import EMBEDDING_OUTPUT

            match = self.voices.match(outputs[EMBEDDING_OUTPUT])
            if match.phrase is not None:
                confidence = float(np.clip(match.similarity, 0.0, 1.0))
                return _result(self.commands, match.phrase, confidence, True)
        scores = None
        if self.phone_threshold is not None:
            scores = self.checker.scores(samples)
            heard = int(np.argmax(scores))
            if scores[heard] >= self.phone_threshold:
                phrase = self.checker.phrases[heard]
                return _result(self.commands, phrase, float(scores[heard]), True)
        probs = self._softmax(outputs)
        best = int(np.argmax(probs))
        label, confidence = self.labels[best], float(probs[best])
        if label in (UNKNOWN, SILENCE):
            return Recognition("", None, False, confidence, label)
        accept = confidence >= self.threshold
        if accept and self.checker is not None and label in self.checker.phrases:
            if scores is None:
                scores = self.checker.scores(samples)
            check = scores[self.checker.phrases.index(label)]
            accept = bool(check >= (self.verify_threshold or 0.0))
        return _result(self.commands, label, confidence, accept)


class SphinxCommandRecognizer:
    """PocketSphinx with a JSGF grammar of the allowed phrases.

    Args:
        commands: The command set; words outside PocketSphinx's dictionary and the set's
            ``pronunciations`` are pronounced by espeak-ng (:mod:`.g2p`), so any spelling
            works (``pronounced`` lists them).
        threshold: Lowest hypothesis posterior accepted.

    Raises:
        BackendUnavailable: pocketsphinx is not installed.
        ConfigError: For words outside the dictionary that espeak-ng cannot pronounce
            (named), or a bad threshold.
    """

    name = "pocketsphinx"

    def __init__(self, commands: CommandSet, *, threshold: float = 0.0) -> None:
        try:
            from pocketsphinx import Config, Decoder
        except ImportError as error:
            raise BackendUnavailable(
                "pocketsphinx", "the pocketsphinx package", "pip install 'ubiq[speech]'"
            ) from error
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"threshold must be in [0, 1), got {threshold}")
        self.decoder = Decoder(Config(lm=None, loglevel="FATAL", dither=True))
        for word, phones in commands.pronunciations.items():
            self.decoder.add_word(word, phones, False)
        missing = [w for w in commands.words if self.decoder.lookup_word(w) is None]
        self.pronounced = self._pronounce(missing, commands.source)
        for word, phones in self.pronounced.items():
            self.decoder.add_word(word, phones, False)
        self.decoder.add_jsgf_string("commands", commands.jsgf())
        self.decoder.activate_search("commands")
        self.commands = commands
        self.threshold = float(threshold)
        self._rng = np.random.default_rng(0)

    @staticmethod
    def _pronounce(words: list[str], source: str) -> dict[str, str]:
        """ARPAbet phones from espeak-ng for words outside PocketSphinx's dictionary.

        Raises:
            ConfigError: Naming the words, when espeak-ng cannot pronounce them.
        """
        from ubiq.pipelines.speech.g2p import pronounce

        pronounced: dict[str, str] = {}
        for word in words:
            try:
                pronounced[word] = pronounce(word)
            except ConfigError as error:
                raise ConfigError(
                    f"{source}: words outside the pronunciation dictionary: "
                    f"{', '.join(words)}, and {error} (add them under 'pronunciations:' in a "
                    f"YAML commands file)"
                ) from error
        if pronounced:
            logger.info(
                "pronounced with espeak-ng: %s",
                ", ".join(f"{w} ({p})" for w, p in pronounced.items()),
            )
        return pronounced

    def recognize(self, samples: np.ndarray) -> Recognition:
        samples = np.asarray(samples, np.float32)
        # Dither at about -80 dBFS: exact digital silence upsets PocketSphinx's cepstral mean
        # normalisation (measured: clean clips padded with zeros were decoded far worse).
        dither = self._rng.normal(0.0, 1e-4, len(samples)).astype(np.float32)
        pcm = (np.clip(samples + dither, -1.0, 1.0) * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        if hyp is None or not hyp.hypstr:
            return Recognition("", None, False, 0.0, "")
        confidence = float(hyp.prob) if math.isfinite(hyp.prob) else 0.0
        return _result(self.commands, hyp.hypstr, confidence, confidence >= self.threshold)


def open_recognizer(
    commands: CommandSet,
    *,
    engine: str = "auto",
    model: str | Path | None = None,
    threshold: float | None = None,
    threads: int | None = 1,
    progress: bool = True,
    verify: bool = True,
) -> CommandRecognizer:
    """The command recogniser for ``engine``: ``model`` (a trained command model, needs
    ``model``), ``phones`` (the shipped phone recogniser, no training; ``model`` may name
    another phone model), ``pocketsphinx``, or ``auto`` (the command model when one is
    given, else ``phones``). ``verify=False`` leaves a command model's phone check off.

    Raises:
        ConfigError: For an unknown engine, or ``engine="model"`` without a model.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be {', '.join(ENGINES)}, got {engine!r}")
    if engine == "model" and model is None:
        raise ConfigError(
            "--engine model needs --model (train one with `ubiq train --task kws --commands FILE`)"
        )
    kwargs = {} if threshold is None else {"threshold": threshold}
    if engine == "phones" or (engine == "auto" and model is None):
        from ubiq.pipelines.speech.phone_commands import PhoneCommandRecognizer

        logger.info("commands: the phone recogniser (no training)")
        if model is not None:
            kwargs["model"] = model
        return PhoneCommandRecognizer(commands, threads=threads, progress=progress, **kwargs)
    if engine in ("auto", "model"):
        return ModelCommandRecognizer(model, commands, threads=threads, verify=verify, **kwargs)
    logger.info("commands: PocketSphinx grammar")
    return SphinxCommandRecognizer(commands, **kwargs)
