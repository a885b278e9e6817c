"""Commands with no training wait: a shipped phone recogniser scores each phrase's phones.

:class:`PhoneCommandRecognizer` is what ``ubiq listen --commands FILE`` uses when no
``--model`` is given. ``ubiq-phones`` (trained once on espeak-ng and flite speech of a
broad vocabulary, see ``scripts/make_ubiq_phones.py``) turns an utterance into per-frame phone
posteriors; every phrase of the command list, and the wake phrase, is spelled in ARPAbet
phones by espeak-ng (any word: names too) in a US and a British accent. The utterance is
scored against each spelling by its CTC likelihood, and the best phrase's confidence is

    exp((log P(phrase) - log P(best free path)) / phones in the phrase)

the average log-probability per phone that the phrase's spelling loses to the best
unconstrained reading of the same audio: near 1 when the audio says the phrase, small when a
word differs ("open the window" against "open the garage") or when there is more speech
than the phrase (a sentence that only contains a command).

The threshold is chosen for each command list at first start, in seconds, and cached by
the list's hash (:func:`calibrate`): the list's phrases are synthesised with
:data:`CALIBRATION_VOICES` clean and at 10 dB, and so are negatives made from the list
itself (one word swapped for an everyday word or for one that sounds alike, a word left
out, the words shuffled) and everyday sentences; the threshold is the lowest that lets at
most :data:`MAX_NEAR_MISSES` of those near misses and :data:`MAX_SENTENCES` of the
sentences through. None of the calibration voices is one that ``benchmarks/speech_bar.py``
tests on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.pipelines.speech.commands import CommandSet
from ubiq.pipelines.speech.phones import (
    FEATURES,
    best_path_log_likelihood,
    cmu_dictionary,
    ctc_log_likelihood,
    everyday_words,
    normalize_features,
    phone_ids,
    phrase_phones,
)
from ubiq.pipelines.speech.recognize import SAMPLE_RATE, Recognition, _result

__all__ = [
    "CALIBRATION_VOICES",
    "DEFAULT_PHONE_MODEL",
    "Calibration",
    "PhoneCommandRecognizer",
    "calibrate",
    "near_miss_texts",
    "sound_alikes",
    "shipped_phone_model",
]

logger = logging.getLogger(__name__)

DEFAULT_PHONE_MODEL = "ubiq-phones"
PRONUNCIATION_VOICES = ("en-us", "en")
"""Accents each phrase is spelled in (US and British English)."""
CALIBRATION_VOICES = (("en-us+m3", 150), ("en+f2", 185), ("en-029+m1", 160), ("en-gb-x-rp+f1", 140))
"""Voices and speeds (wpm) the phrases and negatives are spoken with at first start."""
CALIBRATION_SNRS = (None, 10.0)
MAX_NEAR_MISSES = 0.10
"""Share of the generated near misses the chosen threshold may accept: the speech bar's own
limit, since a third of them are one sound from a command (a word swapped for one that
sounds alike, as "volume dawn"), which no threshold keeps out entirely."""
MAX_SENTENCES = 0.01
"""Share of the everyday sentences the chosen threshold may accept."""
CALIBRATION_VERSION = 2
_FILLERS = (
    "paper", "yellow", "basket", "river", "table", "seven", "doctor", "pillow", "pencil",
    "coffee", "orange", "summer", "jacket", "candle", "later", "wallet", "rabbit", "silver",
    "button", "market", "kitchen", "letter", "dinner", "number", "open", "light", "door",
    "sugar", "book", "tree", "cup", "bed", "fish", "milk", "ship", "road", "time", "hand",
)  # fmt: skip
"""Words a near miss swaps in (a mix of one- and two-syllable everyday words; none of the
words of ``benchmarks/near-misses-home.txt``, so the calibration never sees a test phrase)."""


def shipped_phone_model() -> Path:
    """The phone model installed with ubiq."""
    from importlib.resources import files

    return Path(str(files("ubiq.data.models").joinpath(f"{DEFAULT_PHONE_MODEL}.onnx")))


def sound_alikes(word: str) -> list[str]:
    """Everyday words that sound like ``word``: the same phones in the CMU dictionary but
    one substituted ("light" -> "like", "late", "right"), never a homophone; none for a
    word outside the dictionary, of one phone, or without pocketsphinx."""
    dictionary = cmu_dictionary()
    phones = dictionary.get(word)
    if phones is None or len(phones) < 2:
        return []
    return sorted(
        other
        for other in everyday_words()
        if len(candidate := dictionary.get(other, ())) == len(phones)
        and sum(a != b for a, b in zip(candidate, phones)) == 1
    )


def near_miss_texts(phrases: list[str], rng: np.random.Generator, per_phrase: int = 6) -> list[str]:
    """Negatives made from the command list itself: for each phrase, a word swapped for an
    everyday word or for a word that sounds alike (:func:`sound_alikes`), a word left out,
    and the words shuffled; never a phrase of the list."""
    allowed = {p.lower() for p in phrases}
    alike = {w: sound_alikes(w) for p in phrases for w in p.split()}
    out: list[str] = []
    for phrase in phrases:
        words = phrase.split()
        made: set[str] = set()
        for _ in range(8 * per_phrase):
            kind = rng.integers(4)
            i = int(rng.integers(len(words)))
            if kind == 0:
                text = " ".join([*words[:i], str(rng.choice(_FILLERS)), *words[i + 1 :]])
            elif kind == 1 and alike[words[i]]:
                swap = str(rng.choice(alike[words[i]]))
                text = " ".join([*words[:i], swap, *words[i + 1 :]])
            elif kind == 2 and len(words) >= 2:
                text = " ".join(words[:i] + words[i + 1 :])
            elif kind == 3 and len(words) >= 2:
                text = " ".join(rng.permutation(words))
            else:
                continue
            if text.lower() not in allowed and text not in made:
                made.add(text)
            if len(made) >= per_phrase:
                break
        out.extend(sorted(made))
    return out


@dataclass
class Calibration:
    """The threshold chosen for one command list, with how it was chosen."""

    threshold: float
    rule: str
    commands_accepted: float
    near_misses_accepted: float
    sentences_accepted: float
    clips: int
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class PhoneCommandRecognizer:
    """Any command list, no training: phone posteriors from ``ubiq-phones`` scored per phrase.

    Args:
        commands: The command set (and wake phrase).
        model: The phone model (``.onnx`` with its ``.json``); the default is the one ubiq
            ships (``ubiq/data/models/ubiq-phones.onnx``).
        threshold: Lowest confidence accepted (``None``: calibrated for this list at first
            start and cached).
        threads: Inference threads.
        cache_dir: Where calibrations are cached (default ``<ubiq home>/phones``).
        progress: Show a progress bar while calibrating.

    Raises:
        ModelError: If the model is missing, corrupt or not a phone model.
        ConfigError: If a threshold is outside ``(0, 1)`` or espeak-ng cannot spell a phrase.
    """

    name = "phones"
    context_ms = 250.0
    """Audio a :class:`~ubiq.pipelines.speech.listen.SpeechPipeline` gives this recogniser
    before and after each utterance's speech (the VAD's own padding is 30 ms). The phone
    model reads a phone from its surroundings: with the speech cut 30 ms from its edges, a
    phrase's first and last phones are poorly heard ("call my mother" scored 0.05-0.18 on
    held-out voices, 0.6-1.0 with 200-300 ms around it), and the threshold is calibrated on
    clips with 200 ms around the speech."""

    def __init__(
        self,
        commands: CommandSet,
        *,
        model: str | Path = DEFAULT_PHONE_MODEL,
        threshold: float | None = None,
        threads: int | None = 1,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        from ubiq.models.runtime.backend import load_backend

        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        path = shipped_phone_model() if model == DEFAULT_PHONE_MODEL else Path(model).expanduser()
        if not path.is_file():
            raise ModelError(f"phone model {path} not found")
        sidecar = path.with_suffix(".json")
        try:
            manifest = json.loads(sidecar.read_text())
        except (OSError, ValueError) as error:
            raise ModelError(f"{path}: cannot read its manifest {sidecar}: {error}") from error
        if manifest.get("task") != "phones":
            raise ModelError(f"{path} is a {manifest.get('task')!r} model, not a phone model")
        self.backend = load_backend(path, num_threads=threads, device="cpu")
        self.input_name = self.backend.inputs[0].name
        self.path = path
        self.commands = commands
        self.phrases = [*commands.texts, *([commands.wake] if commands.wake else [])]
        self.spellings: list[np.ndarray] = []
        self.owner: list[int] = []
        for k, text in enumerate(self.phrases):
            try:
                spellings = self._spell(text, commands.pronunciations)
            except ConfigError as error:
                raise ConfigError(
                    f"{commands.source}: cannot spell {text!r} in phones: {error}"
                ) from error
            for spelling in spellings:
                self.spellings.append(phone_ids(spelling))
                self.owner.append(k)
        self.owner_array = np.array(self.owner)
        self.lengths = np.array([len(s) for s in self.spellings])
        self.calibration: Calibration | None = None
        if threshold is None:
            self.calibration = self._calibrated(cache_dir, progress)
            threshold = self.calibration.threshold
        self.threshold = float(threshold)

    @staticmethod
    def _spell(text: str, pronunciations: dict[str, str]) -> list[tuple[str, ...]]:
        spellings = {phrase_phones(text, voice) for voice in PRONUNCIATION_VOICES}
        words = text.split()
        if any(w in pronunciations for w in words):
            own: list[str] = []
            for word in words:
                own += (
                    pronunciations[word].split() if word in pronunciations else phrase_phones(word)
                )
            spellings.add(tuple(own))
        return sorted(spellings)

    def scores(self, samples: np.ndarray) -> np.ndarray:
        """Confidence (0 to 1) of every phrase (command order, then the wake phrase)."""
        samples = np.asarray(samples, np.float32)
        if len(samples) < int(0.1 * SAMPLE_RATE):
            return np.zeros(len(self.phrases))
        features = normalize_features(FEATURES(samples))[None]
        name = self.backend.outputs[0].name
        log_probs = self.backend.run({self.input_name: features})[name][0]
        likelihood = ctc_log_likelihood(log_probs, self.spellings)
        best = best_path_log_likelihood(log_probs)
        per_phone = np.minimum(likelihood - best, 0.0) / self.lengths
        confidence = np.exp(per_phone)
        out = np.zeros(len(self.phrases))
        np.maximum.at(out, self.owner_array, np.nan_to_num(confidence, nan=0.0))
        return out

    def recognize(self, samples: np.ndarray) -> Recognition:
        scores = self.scores(samples)
        if not scores.any():
            return Recognition("", None, False, 0.0, "")
        best = int(np.argmax(scores))
        return _result(self.commands, self.phrases[best], float(scores[best]),
                       scores[best] >= self.threshold)  # fmt: skip

    def _calibrated(self, cache_dir: str | Path | None, progress: bool) -> Calibration:
        from ubiq.paths import file_sha256, ubiq_home

        key = hashlib.sha256(
            json.dumps(
                [CALIBRATION_VERSION, MAX_NEAR_MISSES, MAX_SENTENCES, file_sha256(self.path),
                 self.phrases, sorted(self.commands.pronunciations.items())]
            ).encode()
        ).hexdigest()[:16]  # fmt: skip
        folder = Path(cache_dir) if cache_dir is not None else ubiq_home() / "phones"
        cached = folder / f"calibration-{key}.json"
        if cached.is_file():
            try:
                return Calibration(**json.loads(cached.read_text()))
            except (OSError, ValueError, TypeError):
                logger.warning("ignoring a damaged calibration cache %s", cached)
        calibration = calibrate(self, progress=progress)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".part")
            partial.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
            partial.replace(cached)
        except OSError as error:
            logger.warning("cannot cache the calibration in %s: %s", folder, error)
        return calibration


def _noisy(speech: np.ndarray, snr: float | None, rng: np.random.Generator) -> np.ndarray:
    """``speech`` at a peak of 0.5 between 0.2 s pads, with white noise ``snr`` dB below it."""
    from ubiq.models.datasets.speech import colored_noise

    pad = np.zeros(int(0.2 * SAMPLE_RATE), np.float32)
    clip = np.concatenate([pad, speech / max(float(np.abs(speech).max()), 1e-6) * 0.5, pad])
    if snr is not None:
        power = float(np.mean(speech**2) / max(float(np.abs(speech).max()), 1e-6) ** 2 * 0.25)
        clip = clip + colored_noise("white", len(clip), rng) * math.sqrt(power / 10 ** (snr / 10))
    return np.clip(clip, -1, 1).astype(np.float32)


def calibrate(recognizer: PhoneCommandRecognizer, *, progress: bool = True) -> Calibration:
    """Chooses ``recognizer``'s threshold for its command list (see the module docstring)."""
    from tqdm import tqdm

    from ubiq.models.datasets.command_training import DEFAULT_SENTENCES
    from ubiq.models.datasets.speech import speak

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    phrases = recognizer.phrases
    near = near_miss_texts(phrases, rng)
    sentences = list(DEFAULT_SENTENCES[:20])
    jobs = [("command", t) for t in phrases] + [("near", t) for t in near]
    jobs += [("sentence", t) for t in sentences]
    best: dict[str, list[float]] = {"command": [], "near": [], "sentence": []}
    total = len(jobs) * len(CALIBRATION_VOICES) * len(CALIBRATION_SNRS)
    # disable=None: a bar on a terminal only, never in a log or a captured stderr
    bar = tqdm(total=total, desc="calibrating commands (first start)",
               disable=None if progress else True, unit="clip", leave=False)  # fmt: skip
    for kind, text in jobs:
        for voice, speed in CALIBRATION_VOICES:
            speech = speak(text, voice, speed, 50)
            for snr in CALIBRATION_SNRS:
                scores = recognizer.scores(_noisy(speech, snr, rng))
                if kind == "command":
                    best[kind].append(float(scores[phrases.index(text)]))
                else:
                    best[kind].append(float(scores.max()))
                bar.update()
    bar.close()
    arrays = {k: np.array(v) for k, v in best.items()}
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    chosen = None
    for t in grid:
        near_rate = float(np.mean(arrays["near"] >= t)) if len(arrays["near"]) else 0.0
        sentence_rate = float(np.mean(arrays["sentence"] >= t))
        if near_rate <= MAX_NEAR_MISSES and sentence_rate <= MAX_SENTENCES:
            chosen = float(t)
            break
    rule = (
        f"lowest of 0.05-0.95 accepting at most {MAX_NEAR_MISSES:.0%} of "
        f"{len(arrays['near'])} near-miss clips and {MAX_SENTENCES:.0%} of "
        f"{len(arrays['sentence'])} sentence clips (voices "
        f"{', '.join(v for v, _ in CALIBRATION_VOICES)}; clean and 10 dB)"
    )
    if chosen is None:
        chosen = 0.95
        rule += "; none did, so 0.95"
    return Calibration(
        threshold=chosen,
        rule=rule,
        commands_accepted=float(np.mean(arrays["command"] >= chosen)),
        near_misses_accepted=float(np.mean(arrays["near"] >= chosen)) if len(near) else 0.0,
        sentences_accepted=float(np.mean(arrays["sentence"] >= chosen)),
        clips=sum(len(v) for v in arrays.values()),
        seconds=round(time.perf_counter() - started, 2),
    )
