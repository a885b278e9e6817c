"""A training set for a command classifier, spoken by espeak-ng from the user's command list.

Grammar decoders accept too much: any sentence gets forced onto the closest command. ubiq
instead trains a small keyword-spotting network whose classes are the command phrases
themselves, plus ``_unknown_`` (speech that is not a command) and ``_silence_``, on speech
synthesised for exactly the user's phrases (as openWakeWord trains wake words on
synthetic speech). :func:`make_command_training_set` writes the same folder layout as
:func:`ubiq.models.datasets.speech.make_keyword_set`, so ``ubiq train --task kws`` trains
on it unchanged::

    root/train/<phrase>/*.wav     each phrase, training voices x speeds x pitches
    root/train/_unknown_/*.wav    hard negatives (below)
    root/train/_silence_/*.wav    noise at random levels
    root/val/...                  the same classes spoken by other voices
    root/dataset.yaml             phrases, voices of each split, clip length, counts

``_unknown_`` holds what a command classifier must learn to refuse:

* everyday sentences (:data:`DEFAULT_SENTENCES`);
* parts of commands of three or more words ("turn on the", "kitchen light") that are not
  commands themselves;
* such commands with one word swapped for another ("turn on the garden light");
* command words in shuffled order.

Clips are trimmed speech at natural length; the loader centres each in ``clip_seconds``
(the longest phrase at the slowest speed, plus a margin), recorded in ``dataset.yaml``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ubiq.errors import ConfigError
from ubiq.models.datasets.speech import (
    SAMPLE_RATE,
    SILENCE,
    UNKNOWN,
    _check_grid,
    _espeak,
    _espeak_version,
    colored_noise,
    synthesize_word,
)
from ubiq.models.runtime.audio_features import write_wav

__all__ = [
    "DEFAULT_SENTENCES",
    "DEFAULT_TRAIN_VOICES",
    "DEFAULT_VAL_VOICES",
    "HELD_OUT_VOICES",
    "make_command_training_set",
    "unknown_phrases",
]

logger = logging.getLogger(__name__)

# espeak-ng 1.51 ignores a "+variant" after "en-gb": variants are put on "en" and "en-us".
DEFAULT_TRAIN_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-029",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us+f3",
    "en-us+m3",
    "en-us+m1",
    "en-us+klatt2",
    "en-us+Andy",
    "en-us+Michael",
    "en+f2",
    "en+m7",
    "en+Annie",
    "en-029+f1",
    "en-us+m6",
    "en+m4",
    "en-029+m2",
    "en-gb-x-rp+m1",
)
DEFAULT_VAL_VOICES = ("en-us+f5", "en-gb-x-rp+f2")
HELD_OUT_VOICES = ("en-gb-scotland+m5", "en+f4", "en-us-nyc")
"""Voices used by neither split: the speech benchmark evaluates on these. No training or
validation voice has their accent (Scottish, New York) or their variant (m5, f4)."""

DEFAULT_SENTENCES = (
    "good morning how are you",
    "the meeting starts at nine",
    "i left my keys in the car",
    "could you call me back later",
    "the children are playing outside",
    "it looks like rain this afternoon",
    "dinner will be ready soon",
    "where did you put the newspaper",
    "the shop closes at six",
    "he forgot his umbrella again",
    "we need more milk and bread",
    "that film was really long",
    "my phone battery is almost empty",
    "the garden needs watering",
    "she plays the piano very well",
    "let's go for a walk",
    "the bus was late this morning",
    "thank you very much",
    "i don't know what you mean",
    "the printer is out of paper",
    "have you seen my glasses",
    "our neighbours have a new dog",
    "the soup is too hot",
    "he works at the hospital",
    "yes that sounds good",
    "no thanks i'm fine",
    "hello is anybody there",
    "the package arrived yesterday",
    "we are going on holiday next week",
    "the window is open",
)
"""Everyday sentences of the ``_unknown_`` class (the speech benchmark uses other ones)."""

_FILLER_WORDS = (
    "garden", "radio", "window", "table", "yellow", "seven", "morning", "paper", "coffee",
    "doctor", "river", "happy", "orange", "basket", "music", "pencil", "later", "forty",
)  # fmt: skip


def unknown_phrases(
    phrases: Sequence[str], count: int, rng: np.random.Generator, sentences: Sequence[str]
) -> list[str]:
    """Texts for the ``_unknown_`` class: sentences, command parts, swaps, sound-alikes and
    shuffles.

    A swap replaces one word of a command with an everyday filler word ("open the radio"),
    a sound-alike with an everyday word one phone away in the CMU dictionary ("lock the
    front floor"; :func:`~ubiq.pipelines.speech.phone_commands.sound_alikes`, none without
    pocketsphinx's dictionary): the near misses a user says by chance. Never returns one of
    ``phrases``. A fifth of ``count`` comes from each kind (fewer where a kind has fewer
    distinct texts; the sentences fill the rest).
    """
    from ubiq.pipelines.speech.phone_commands import sound_alikes

    allowed = {p.lower() for p in phrases}
    words = sorted({w for p in phrases for w in p.split()})
    parts, swaps, alikes, shuffles = set(), set(), set(), set()
    for phrase in phrases:
        tokens = phrase.split()
        if len(tokens) < 3:
            # a part or a one-word swap of a two-word command keeps half of it: in noise the
            # model learned to refuse the command itself ("volume up" at 10 dB), so only
            # longer phrases get these near-misses
            continue
        for i in range(len(tokens)):
            for j in range(i + 1, len(tokens) + 1):
                if j - i < len(tokens):
                    parts.add(" ".join(tokens[i:j]))
        for i in range(len(tokens)):
            for filler in _FILLER_WORDS:
                swaps.add(" ".join([*tokens[:i], filler, *tokens[i + 1 :]]))
            for alike in sound_alikes(tokens[i]):
                alikes.add(" ".join([*tokens[:i], alike, *tokens[i + 1 :]]))
    for _ in range(4 * count):
        size = int(rng.integers(2, 6))
        shuffles.add(" ".join(rng.choice(words, size=min(size, len(words)), replace=False)))
    # single words too short to be speech-like are still useful parts ("light", "on")
    kinds = [sorted(k - allowed) for k in (parts, swaps, alikes, shuffles)]
    fifth = max(1, count // 5)
    out: list[str] = []
    for kind in kinds:
        if kind:
            picks = rng.choice(len(kind), size=min(fifth, len(kind)), replace=False)
            out.extend(kind[int(i)] for i in picks)
    pool = [s for s in sentences if s.lower() not in allowed]
    while len(out) < count and pool:
        out.append(pool[len(out) % len(pool)])
    return out[:count]


def _noise_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    kind = str(rng.choice(["white", "pink", "brown"]))
    level = 10 ** (float(rng.uniform(-70.0, -20.0)) / 20)
    noise = colored_noise(kind, int(SAMPLE_RATE * seconds), rng) * np.float32(level)
    return np.clip(noise, -1.0, 1.0).astype(np.float32)


def make_command_training_set(
    out_dir: str | Path,
    phrases: Sequence[str],
    *,
    voices: Sequence[str] = DEFAULT_TRAIN_VOICES,
    val_voices: Sequence[str] = DEFAULT_VAL_VOICES,
    speeds: Sequence[int] = (110, 145, 180),
    pitches: Sequence[int] = (35, 55, 75),
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    unknown_factor: float = 3.0,
    seed: int = 0,
    progress: bool = True,
    pronunciations: Mapping[str, str] | None = None,
) -> Path:
    """Writes a command-classifier training set (layout in the module docstring).

    Args:
        out_dir: Output root (its ``train`` and ``val`` must be absent or empty).
        phrases: The command phrases (and the wake phrase, if any), normalised words.
        voices: espeak-ng voices of the training split.
        val_voices: Voices of the validation split; none may be in ``voices``.
        speeds: Speaking rates in words per minute.
        pitches: Pitches, 0 to 99.
        sentences: Everyday sentences for ``_unknown_``.
        unknown_factor: ``_unknown_`` gets this many times the clips of one phrase.
        seed: Seed of the negatives' texts and settings and of the noise.
        progress: Show a progress bar.
        pronunciations: A commands file's own ``pronunciations:`` (word to ARPAbet
            phones), recorded in ``dataset.yaml`` so that training's phone check spells
            those words as ``ubiq listen`` will.

    Returns:
        ``out_dir``, resolved.

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: For no phrases, duplicate phrases, a bad voice grid, a validation
            voice that is also a training voice, or an output folder in use.
    """
    phrases = [" ".join(str(p).lower().split()) for p in phrases]
    if not phrases or any(not p for p in phrases):
        raise ConfigError("phrases must name at least one non-empty command phrase")
    if len(set(phrases)) != len(phrases):
        twice = sorted(p for p in set(phrases) if phrases.count(p) > 1)
        raise ConfigError(f"phrases has duplicates: {twice}")
    if any(p.startswith("_") for p in phrases):
        raise ConfigError("phrases must not start with '_' (reserved for _unknown_ and _silence_)")
    _check_grid(voices, speeds, pitches, "voices")
    _check_grid(val_voices, speeds, pitches, "val_voices")
    shared = sorted(set(voices) & set(val_voices))
    if shared:
        raise ConfigError(f"val_voices must not be training voices; both name {shared}")
    if unknown_factor <= 0:
        raise ConfigError(f"unknown_factor must be > 0, got {unknown_factor}")
    _espeak()
    out_dir = Path(out_dir).expanduser().resolve()
    for split in ("train", "val"):
        if (out_dir / split).exists() and any((out_dir / split).iterdir()):
            raise ConfigError(f"output folder {out_dir / split} is not empty")
    rng = np.random.default_rng(seed)
    jobs: list[tuple[str, str, str, str | None, str, int, int]] = []
    counts: dict[str, dict[str, int]] = {}
    for split, split_voices in (("train", voices), ("val", val_voices)):
        grid = [(v, int(s), int(p)) for v in split_voices for s in speeds for p in pitches]
        for index, phrase in enumerate(phrases):
            jobs.extend(
                (split, phrase, f"{index:03d}_{n:03d}", phrase, *g) for n, g in enumerate(grid)
            )
        n_unknown = int(round(len(grid) * unknown_factor))
        texts = unknown_phrases(phrases, n_unknown, rng, sentences)
        for n, text in enumerate(texts):
            settings = grid[int(rng.integers(len(grid)))]
            jobs.append((split, UNKNOWN, f"{n:04d}", text, *settings))
        jobs.extend((split, SILENCE, f"{n:04d}", None, "", 0, 0) for n in range(len(grid)))
        counts[split] = {p: len(grid) for p in phrases}
        counts[split].update({UNKNOWN: len(texts), SILENCE: len(grid)})
    longest = 0.0
    silences = []
    for split, name, stem, text, voice, speed, pitch in tqdm(
        jobs, desc="espeak-ng", disable=not progress, leave=False
    ):
        folder = out_dir / split / name
        folder.mkdir(parents=True, exist_ok=True)
        if text is None:
            silences.append(folder / f"{stem}.wav")
            continue
        samples = synthesize_word(text, voice, speed, pitch)
        if name != UNKNOWN:
            longest = max(longest, len(samples) / SAMPLE_RATE)
        write_wav(folder / f"{stem}.wav", samples, SAMPLE_RATE)
    clip_seconds = min(6.0, math.ceil((longest + 0.3) * 4) / 4)
    for path in silences:
        write_wav(path, _noise_clip(rng, clip_seconds), SAMPLE_RATE)
    description = {
        "task": "kws",
        "kind": "commands",
        "names": sorted([*phrases, UNKNOWN, SILENCE]),
        "phrases": phrases,
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": clip_seconds,
        "longest_phrase_seconds": round(longest, 3),
        "format": "WAV, mono, 16-bit PCM, trimmed speech (centred in clip_seconds on load)",
        "train": {"voices": list(voices), "clips": counts["train"]},
        "val": {"voices": list(val_voices), "clips": counts["val"]},
        "held_out_voices": [v for v in HELD_OUT_VOICES if v not in (*voices, *val_voices)],
        "speeds_wpm": [int(s) for s in speeds],
        "pitches": [int(p) for p in pitches],
        "unknown": "everyday sentences, parts of commands, one-word swaps, shuffled command words",
        "silence": "white, pink or brown noise, RMS -70 to -20 dBFS",
        "generator": _espeak_version(),
        "seed": int(seed),
    }
    if pronunciations:
        description["pronunciations"] = {str(k): str(v) for k, v in pronunciations.items()}
    text = yaml.safe_dump(description, sort_keys=False, allow_unicode=True)
    (out_dir / "dataset.yaml").write_text(text, encoding="utf-8")
    logger.info("wrote %d clips to %s (clip %.2f s)", len(jobs), out_dir, clip_seconds)
    return out_dir
