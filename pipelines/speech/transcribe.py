"""Open-vocabulary transcription of one utterance, behind one :class:`Transcriber` interface.

Engines, in the order ``open_transcriber("auto")`` tries them:

- ``faster-whisper`` and ``whisper`` (openai-whisper): accurate; weights downloaded once, or
  read from a local path. Confidence: ``exp(mean avg_logprob)`` over the decoded segments.
- ``pocketsphinx``: offline with the US-English model bundled in its wheel; far less accurate.

PocketSphinx 5's Python API gives *linear* probabilities. ``Decoder.hyp().prob`` is the
posterior of the whole word string: it shrinks with length (underflowing to 0.0 on a
six-word sentence), is 1.0 with ``bestpath`` off and 0.3 to 0.6 for an *empty* hypothesis,
so it is not used. Each ``Decoder.seg()`` item's ``.prob`` is that word's lattice posterior;
the confidence here is their geometric mean (``<s>``, ``</s>``, ``<sil>`` and fillers left
out), a per-word counterpart of Whisper's per-token mean, and 0 when no word was recognised.

Input is ``(N,)`` float32 mono audio at 16 kHz in ``[-1, 1]``. Empty or digitally silent
input gives an empty :class:`Transcript` with confidence 0 without running a model (Whisper
tends to hallucinate text on silence).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import math
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, ModelError

__all__ = [
    "ENGINES",
    "SAMPLE_RATE",
    "FasterWhisperTranscriber",
    "PocketSphinxTranscriber",
    "Transcriber",
    "Transcript",
    "WhisperTranscriber",
    "Word",
    "available_engines",
    "open_transcriber",
    "word_errors",
    "words",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ENGINES = ("auto", "pocketsphinx", "faster-whisper", "whisper")
SILENCE_PEAK = 1e-4
"""Peak amplitude below which input counts as digital silence (about -80 dBFS)."""

# engine -> (Python module, pip distribution, where its model comes from); "auto" order
_PACKAGES = {
    "faster-whisper": ("faster_whisper", "faster-whisper", "model downloaded once from HF Hub"),
    "whisper": ("whisper", "openai-whisper", "model downloaded once to ~/.cache/whisper"),
    "pocketsphinx": ("pocketsphinx", "pocketsphinx", "bundled offline US-English model"),
}


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span (seconds from the start of the input)."""

    text: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Transcript:
    """The text of one utterance.

    Attributes:
        text: Recognised text, lower- or mixed-case as the engine gives it, stripped.
        confidence: Engine confidence in ``[0, 1]``; 0 for an empty transcript.
        engine: Name of the engine that produced it.
        words: Per-word :class:`Word` entries when the engine gives them, else ``()``.
    """

    text: str
    confidence: float
    engine: str
    words: tuple = ()


@runtime_checkable
class Transcriber(Protocol):
    """Anything that turns one utterance of 16 kHz mono audio into a :class:`Transcript`."""

    name: str

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Transcribes ``(N,)`` float32 mono samples at 16 kHz."""
        ...


def _as_samples(samples: np.ndarray) -> np.ndarray:
    """Validates audio and returns it as contiguous ``(N,)`` float32 in ``[-1, 1]``."""
    if not isinstance(samples, np.ndarray):
        raise ValueError(f"samples must be a numpy array, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise ValueError(f"samples must have shape (N,) (mono), got {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"samples must be float32 (or int16), got {samples.dtype}")
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples must be finite, got NaN or infinity")
    return np.ascontiguousarray(np.clip(samples, -1.0, 1.0), dtype=np.float32)


def _is_silent(samples: np.ndarray) -> bool:
    return len(samples) == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK


def _import(engine: str) -> Any:
    """Imports an engine's package or raises :class:`BackendUnavailable` naming it."""
    module_name, distribution, _ = _PACKAGES[engine]
    try:
        return importlib.import_module(module_name)
    except (ImportError, OSError) as error:  # OSError: a native library fails to load
        missing = f"Python package {distribution!r}"
        if getattr(error, "name", None) not in (None, module_name):
            missing = f"{error.name!r} (needed by {distribution})"
        raise BackendUnavailable(engine, missing, hint=f"pip install {distribution}") from error


def _model_error(engine: str, model: str, error: BaseException) -> ModelError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return ModelError(
        f"{engine} model {model!r} cannot be loaded ({reason}); it needs to be downloaded "
        "once (run with network access) or pointed to a local model directory"
    )


def _dithered_pcm(samples: np.ndarray) -> bytes:
    """16-bit PCM plus +-1 LSB of seeded dither.

    Digital silence (espeak-ng's padding, a muted microphone) skews PocketSphinx's cepstral
    mean normalisation: on espeak-ng speech this halves the word error rate. It measured a
    little better than the decoder's own ``dither`` option (+1 LSB on a quarter of samples).
    """
    noise = np.random.default_rng(0).integers(-1, 2, len(samples))
    pcm = np.round(samples.astype(np.float64) * 32767.0) + noise
    return np.clip(pcm, -32768, 32767).astype(np.int16).tobytes()


class PocketSphinxTranscriber:
    """PocketSphinx 5 with an n-gram language model (offline, no download).

    One decoder is created up front (about 0.5 s) and reused by every call; calls from
    several threads are serialised.

    Args:
        model_dir: Acoustic model folder; defaults to the bundled US-English ``en-us/en-us``.
        lm: Binary or ARPA language model; defaults to the bundled ``en-us.lm.bin``.
        dict: Pronunciation dictionary; defaults to the bundled ``cmudict-en-us.dict``.

    Raises:
        BackendUnavailable: pocketsphinx is not installed.
        ModelError: A model file is missing or the decoder rejects it.
    """

    name = "pocketsphinx"

    def __init__(
        self, model_dir: str | Path | None = None, lm: str | Path | None = None, dict=None
    ) -> None:
        pocketsphinx = _import("pocketsphinx")
        paths = {
            "hmm": str(model_dir or pocketsphinx.get_model_path("en-us/en-us")),
            "lm": str(lm or pocketsphinx.get_model_path("en-us/en-us.lm.bin")),
            "dict": str(dict or pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")),
        }
        for key, path in paths.items():
            if not Path(path).exists():
                raise ModelError(f"pocketsphinx {key} file {path!r} does not exist")
        try:
            config = pocketsphinx.Config(
                loglevel="FATAL", dither=False, bestpath=True, samprate=SAMPLE_RATE, **paths
            )
            self._decoder = pocketsphinx.Decoder(config)
        except (RuntimeError, ValueError, KeyError) as error:
            files = ", ".join(f"{key}={path!r}" for key, path in paths.items())
            raise ModelError(
                f"pocketsphinx cannot load its model ({files}): {error}; check that these are "
                "a matching acoustic model, language model and dictionary"
            ) from error
        self._frames_per_s = float(config["frate"])
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Transcribes one utterance.

        Args:
            samples: ``(N,)`` float32 mono samples at 16 kHz in ``[-1, 1]`` (int16 accepted).

        Returns:
            The transcript with per-word times and posteriors.

        Raises:
            ValueError: For samples that are not a finite 1-D float or int16 array.
        """
        samples = _as_samples(samples)
        if _is_silent(samples):
            return Transcript("", 0.0, self.name)
        pcm = _dithered_pcm(samples)
        with self._lock:
            # Fresh feature state (about 40 us): the cepstral mean would otherwise carry over
            # from the previous call, and the same audio could decode differently.
            self._decoder.reinit_feat()
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
            segments = list(self._decoder.seg()) if hypothesis is not None else []
        words = tuple(
            Word(
                text=re.sub(r"\(\d+\)$", "", segment.word),  # "read(2)": alternate pronunciation
                start_s=segment.start_frame / self._frames_per_s,
                end_s=(segment.end_frame + 1) / self._frames_per_s,
                confidence=float(min(1.0, max(0.0, segment.prob))),
            )
            for segment in segments
            if not segment.word.startswith(("<", "[", "++"))  # <s>, </s>, <sil>, [NOISE]
        )
        text = hypothesis.hypstr.strip() if hypothesis is not None else ""
        if not text or not words:
            return Transcript("", 0.0, self.name)
        log_mean = sum(math.log(max(word.confidence, 1e-12)) for word in words) / len(words)
        return Transcript(text, float(math.exp(log_mean)), self.name, words)


class _WhisperTranscriber:
    """Shared part of the Whisper adapters: validation, silence, text and confidence."""

    name = ""

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Transcribes one utterance (see :meth:`PocketSphinxTranscriber.transcribe`)."""
        samples = _as_samples(samples)
        if _is_silent(samples):
            return Transcript("", 0.0, self.name)
        text, avg_logprobs = self._decode(samples)
        if not text.strip() or not avg_logprobs:
            return Transcript("", 0.0, self.name)
        confidence = math.exp(sum(avg_logprobs) / len(avg_logprobs))
        return Transcript(text.strip(), float(min(1.0, confidence)), self.name)

    def _decode(self, samples: np.ndarray) -> tuple[str, list[float]]:
        raise NotImplementedError


class FasterWhisperTranscriber(_WhisperTranscriber):
    """Whisper through faster-whisper (CTranslate2), greedy English decoding.

    Args:
        model: A size name (``"tiny.en"``, ``"base.en"``, ...) downloaded once from the
            Hugging Face Hub, or a local CTranslate2 model directory.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        compute_type: CTranslate2 compute type (``"int8"``, ``"float16"``, ...).

    Raises:
        BackendUnavailable: faster-whisper is not installed.
        ModelError: The model cannot be loaded (not downloaded and offline, bad path, ...).
    """

    name = "faster-whisper"

    def __init__(
        self, model: str = "tiny.en", device: str = "cpu", compute_type: str = "int8"
    ) -> None:
        faster_whisper = _import(self.name)
        try:
            self._model = faster_whisper.WhisperModel(
                model, device=device, compute_type=compute_type
            )
        except (OSError, RuntimeError, ValueError) as error:
            raise _model_error(self.name, model, error) from error
        self.model = model

    def _decode(self, samples: np.ndarray) -> tuple[str, list[float]]:
        segments, _info = self._model.transcribe(samples, language="en", beam_size=1)
        segments = list(segments)  # a generator: decoding happens while iterating
        return "".join(s.text for s in segments), [float(s.avg_logprob) for s in segments]


class WhisperTranscriber(_WhisperTranscriber):
    """OpenAI's reference Whisper (PyTorch), English, fp32 so it runs on a CPU.

    Args:
        model: A model name (``"tiny.en"``, ``"base.en"``, ...) downloaded once to
            ``~/.cache/whisper``, or the path of a local checkpoint file.

    Raises:
        BackendUnavailable: openai-whisper is not installed.
        ModelError: The model cannot be loaded (not downloaded and offline, bad name, ...).
    """

    name = "whisper"

    def __init__(self, model: str = "tiny.en") -> None:
        whisper = _import(self.name)
        if not hasattr(whisper, "load_model"):  # another project's "whisper" module
            raise BackendUnavailable(self.name, "'openai-whisper'", "pip install openai-whisper")
        try:
            self._model = whisper.load_model(model)
        except (OSError, RuntimeError, ValueError) as error:
            raise _model_error(self.name, model, error) from error
        self.model = model

    def _decode(self, samples: np.ndarray) -> tuple[str, list[float]]:
        result = self._model.transcribe(samples, language="en", fp16=False)
        return str(result["text"]), [float(s["avg_logprob"]) for s in result["segments"]]


_CLASSES = {
    c.name: c for c in (FasterWhisperTranscriber, WhisperTranscriber, PocketSphinxTranscriber)
}


def words(text: str) -> list[str]:
    """The words of a transcript, lower-cased, punctuation dropped (apostrophes kept)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> int:
    """Substitutions, deletions and insertions that turn the :func:`words` of
    ``reference`` into those of ``hypothesis`` (the numerator of the word error rate)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous, row[0] = row[:], i
        for j, hyp_word in enumerate(hyp, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
    return row[-1]


def open_transcriber(engine: str = "auto") -> Transcriber:
    """Opens a transcription engine, loading its model.

    ``"auto"`` takes the first of faster-whisper, whisper and pocketsphinx that is installed
    and whose model loads, logging the choice and why the others were skipped.

    Args:
        engine: One of ``"auto"``, ``"pocketsphinx"``, ``"faster-whisper"``, ``"whisper"``.

    Returns:
        A ready :class:`Transcriber`.

    Raises:
        ConfigError: For an unknown engine name.
        BackendUnavailable: The chosen engine (for ``"auto"``: pocketsphinx, the last
            resort) is not installed.
        ModelError: The chosen engine's model cannot be loaded.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return _CLASSES[engine]()
    skipped = []
    for name in ("faster-whisper", "whisper"):
        try:
            transcriber = _CLASSES[name]()
            break
        except (BackendUnavailable, ModelError) as error:
            skipped.append(f"{name}: {error}")
    else:  # neither Whisper engine could be opened
        transcriber = PocketSphinxTranscriber()
    reasons = "; ".join(skipped) or "none"
    logger.info("transcription engine: %s (auto); skipped: %s", transcriber.name, reasons)
    return transcriber


def available_engines() -> list[dict]:
    """Reports which engines are installed, without importing them or loading models.

    Returns:
        One dict per engine: ``name``, ``installed`` (bool) and ``detail`` (the installed
        version and where its model comes from, or how to install it).
    """
    engines = []
    for name, (module_name, distribution, model_source) in _PACKAGES.items():
        try:
            installed = importlib.util.find_spec(module_name) is not None
        except ValueError:  # in sys.modules without a spec (a test double)
            installed = sys.modules.get(module_name) is not None
        if not installed:
            detail = f"not installed (pip install {distribution})"
        else:
            try:
                version = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                version = "(version unknown)"
            detail = f"{distribution} {version}; {model_source}"
        engines.append({"name": name, "installed": installed, "detail": detail})
    return engines
