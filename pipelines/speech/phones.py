"""Phones: ARPAbet sequences for any text, and how well an utterance's phone posteriors fit one.

The zero-wait command path (:class:`~ubiq.pipelines.speech.phone_commands.PhoneCommandRecognizer`)
stands on a phone recogniser ubiq ships (``ubiq-phones``, trained once by
``scripts/make_ubiq_phones.py`` with a CTC loss on espeak-ng and flite speech of a broad
vocabulary).
A command list then needs no training: each phrase is spelled out in phones by espeak-ng
(:func:`phrase_phones`, any word, names included), and an utterance is scored against each
phrase by the CTC likelihood of its phone sequence (:func:`ctc_log_likelihood`), relative
to the best path through the posteriors (:func:`best_path_log_likelihood`).

numpy and the stdlib only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ubiq.errors import ConfigError
from ubiq.models.runtime.audio_features import LogMelOptions
from ubiq.pipelines.speech.g2p import ESPEAK_TO_ARPABET, espeak_phonemes, split_mnemonics

__all__ = [
    "BLANK",
    "FEATURES",
    "PHONES",
    "best_path_log_likelihood",
    "cmu_dictionary",
    "ctc_log_likelihood",
    "everyday_words",
    "normalize_features",
    "phone_ids",
    "phrase_phones",
    "to_phones",
]

PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
"""The 39 ARPAbet phones (CMU dictionary set, no stress); class ``i + 1`` of the model."""
BLANK = 0
"""The CTC blank's class index (the phones follow it)."""

FEATURES = LogMelOptions()
"""The phone model's input: 40 log-mel bands every 10 ms over 30 ms windows."""

_EXTRA = {"R": "R", "2": "", "#": "", "[": "", "]": "", ":": ""}
"""Marks some English espeak-ng voices print that the PocketSphinx table lacks (Scottish
``R``, Caribbean ``[``); a mark with no phone maps to nothing."""
_TABLE = {**_EXTRA, **ESPEAK_TO_ARPABET}
_INDEX = {phone: i + 1 for i, phone in enumerate(PHONES)}


def to_phones(mnemonics: str) -> list[str]:
    """ARPAbet phones of espeak-ng mnemonics, leniently: an unknown symbol is skipped (the
    phone model is trained on every English voice, which print a few marks of their own)."""
    return split_mnemonics(mnemonics, _TABLE, strict=False)


def normalize_features(features: np.ndarray) -> np.ndarray:
    """``(n_mels, frames)`` log-mel features with each band's mean over the utterance removed
    (a microphone's colour and the level drop out), as the phone model was trained."""
    features = np.asarray(features, np.float32)
    return features - features.mean(axis=-1, keepdims=True)


def phone_ids(phones: Sequence[str]) -> np.ndarray:
    """Model class indices of ``phones`` (1-based; 0 is the blank).

    Raises:
        ConfigError: For a phone outside :data:`PHONES`, naming it.
    """
    unknown = [p for p in phones if p not in _INDEX]
    if unknown:
        raise ConfigError(f"not ARPAbet phones: {unknown}")
    return np.array([_INDEX[p] for p in phones], np.int64)


@functools.lru_cache(maxsize=1024)
def phrase_phones(text: str, voice: str = "en-us") -> tuple[str, ...]:
    """ARPAbet phones of a whole phrase as espeak-ng's ``voice`` says it (``espeak-ng -q -x``,
    so words run together as in speech: "turn on the" -> ``T ER N AA N DH AH``).

    Raises:
        ConfigError: If espeak-ng is missing, fails, or gives no phone.
    """
    phones = tuple(to_phones(espeak_phonemes(text, voice)))
    if not phones:
        raise ConfigError(f"espeak-ng gives no phones for {text!r}")
    return phones


def _logsumexp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top = np.maximum(a, b)
    finite = np.isfinite(top)
    out = np.full_like(top, -np.inf)
    out[finite] = top[finite] + np.log(
        np.exp(a[finite] - top[finite]) + np.exp(b[finite] - top[finite])
    )
    return out


def ctc_log_likelihood(log_probs: np.ndarray, sequences: Sequence[np.ndarray]) -> np.ndarray:
    """log P(sequence | posteriors) under CTC for several label sequences at once.

    Args:
        log_probs: ``(T, C)`` per-frame log posteriors, class 0 the blank.
        sequences: Label sequences (class indices, no blanks), each non-empty.

    Returns:
        ``(len(sequences),)`` float64 log-likelihoods (``-inf`` when ``T`` is too short).
    """
    log_probs = np.asarray(log_probs, np.float64)
    frames = len(log_probs)
    count = len(sequences)
    width = 2 * max(len(s) for s in sequences) + 1
    labels = np.zeros((count, width), np.int64)  # blank-interleaved, padded with blanks
    valid = np.zeros((count, width), bool)
    skip = np.zeros((count, width), bool)  # state s may be reached from s - 2
    ends = np.zeros(count, np.int64)
    for k, sequence in enumerate(sequences):
        size = 2 * len(sequence) + 1
        labels[k, 1:size:2] = sequence
        valid[k, :size] = True
        ends[k] = size - 1
        for s in range(3, size, 2):
            skip[k, s] = sequence[(s - 1) // 2] != sequence[(s - 3) // 2]
    alpha = np.full((count, width), -np.inf)
    emit = log_probs[0][labels]
    alpha[:, 0] = emit[:, 0]
    alpha[:, 1] = emit[:, 1]
    alpha[~valid] = -np.inf
    for t in range(1, frames):
        stay = alpha
        step = np.concatenate([np.full((count, 1), -np.inf), alpha[:, :-1]], axis=1)
        jump = np.concatenate([np.full((count, 2), -np.inf), alpha[:, :-2]], axis=1)
        jump = np.where(skip, jump, -np.inf)
        alpha = _logsumexp(_logsumexp(stay, step), jump) + log_probs[t][labels]
        alpha[~valid] = -np.inf
    rows = np.arange(count)
    return _logsumexp(alpha[rows, ends], alpha[rows, ends - 1])


def best_path_log_likelihood(log_probs: np.ndarray) -> float:
    """Log-probability of the single best frame-by-frame path (any phones): the upper bound
    a phrase's own path is measured against."""
    return float(np.max(np.asarray(log_probs, np.float64), axis=1).sum())


@functools.lru_cache(maxsize=1)
def cmu_dictionary() -> dict[str, tuple[str, ...]]:
    """PocketSphinx's CMU dictionary as word -> its first pronunciation (ARPAbet without
    stress marks), in the file's order; ``{}`` without pocketsphinx."""
    from pathlib import Path

    try:
        from pocketsphinx import get_model_path
    except ImportError:
        return {}
    path = Path(get_model_path("en-us/cmudict-en-us.dict"))
    if not path.is_file():
        return {}
    words: dict[str, tuple[str, ...]] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            word, *phones = line.split()
            if phones and "(" not in word:
                words.setdefault(word, tuple(p.rstrip("012") for p in phones))
    return words


@functools.lru_cache(maxsize=1)
def everyday_words() -> tuple[str, ...]:
    """The 4000 everyday words ``ubiq-phones`` was trained on (``ubiq/data``), sorted."""
    from importlib.resources import files

    text = files("ubiq.data").joinpath("phones-vocabulary.txt").read_text(encoding="utf-8")
    return tuple(text.split())
