"""Keyword-spotting sets spoken by espeak-ng, in a Speech-Commands-like folder layout.

:func:`make_keyword_set` synthesises each keyword with Debian's ``espeak-ng`` over a grid
of voices, speeds and pitches and writes one-second, 16 kHz, mono, 16-bit WAV clips::

    root/train/<word>/*.wav       the keywords, training voices
    root/train/_unknown_/*.wav    other words (as many clips as one keyword has)
    root/train/_silence_/*.wav    white, pink or brown noise at random levels
    root/val/...                  the same classes, spoken by voices NOT used in train
    root/dataset.yaml             classes, words, voices of each split, counts, generator

The validation voices are held out, so ``val`` measures how well a model generalises to a
new speaker. Each clip is the word with its leading and trailing silence trimmed, centred
in one second (cropped around its centre when longer). :func:`load_keyword_folder` reads
the layout back (any WAV folder of this shape, such as Google Speech Commands, works).

numpy and the stdlib only: importing this module never imports torch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ubiq.errors import BackendUnavailable, ConfigError, DatasetError
from ubiq.models.runtime.audio_features import fixed_length, read_wav, resample, write_wav

__all__ = [
    "SILENCE",
    "UNKNOWN",
    "colored_noise",
    "load_keyword_folder",
    "make_keyword_set",
    "room_impulse_response",
    "synthesize_word",
]

logger = logging.getLogger(__name__)

UNKNOWN = "_unknown_"
SILENCE = "_silence_"
SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0

DEFAULT_UNKNOWN_WORDS = (
    "house",
    "bird",
    "cat",
    "dog",
    "tree",
    "happy",
    "wow",
    "bed",
    "marvin",
    "sheila",
    "water",
    "table",
    "window",
    "paper",
    "music",
    "orange",
    "purple",
    "coffee",
    "garden",
    "morning",
)
"""Words of the ``_unknown_`` class (any that are also keywords are left out)."""

# espeak-ng 1.51 ignores a "+variant" after "en-gb" (it plays plain en-gb), so the
# defaults name "en" (the same British voice) where a variant is wanted.
DEFAULT_TRAIN_VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m3")
DEFAULT_VAL_VOICES = ("en+f4", "en-gb-scotland+m5")

_WORD_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9' -]*$")


def _espeak() -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        raise BackendUnavailable(
            "espeak-ng", "the espeak-ng program", "sudo apt-get install espeak-ng"
        )
    return program


def speak(
    text: str, voice: str, speed_wpm: int, pitch: int, *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speaks ``text`` with espeak-ng, untrimmed (espeak-ng's own silence kept), resampled.

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: espeak-ng rejects the voice or says nothing.
    """
    program = _espeak()
    with tempfile.TemporaryDirectory(prefix="ubiq-espeak-") as folder:
        path = Path(folder) / "speech.wav"
        command = [program, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(path)]
        try:
            result = subprocess.run(
                [*command, "--", text], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ConfigError(f"espeak-ng failed for voice {voice!r}: {error}") from error
        if result.returncode != 0 or not path.is_file():
            message = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
            raise ConfigError(f"espeak-ng cannot speak with voice {voice!r}: {message}")
        try:
            samples, rate = read_wav(path)
        except DatasetError as error:
            raise ConfigError(f"espeak-ng said nothing for {text!r} with {voice!r}") from error
    return resample(samples, rate, sample_rate)


def synthesize_word(
    word: str, voice: str, speed_wpm: int, pitch: int, *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speaks one word with espeak-ng and returns it trimmed of silence, at ``sample_rate``.

    Args:
        word: The text to speak.
        voice: An espeak-ng voice, optionally with a variant (``"en-us+f3"``).
        speed_wpm: Speaking rate in words per minute (80 to 450).
        pitch: Pitch, 0 to 99.
        sample_rate: Output samples per second (espeak-ng speaks at 22050 Hz).

    Returns:
        ``(N,)`` float32 mono samples in ``[-1, 1]``, with 20 ms of margin kept on each side.

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: espeak-ng rejects the voice or says nothing.
    """
    samples = speak(word, voice, speed_wpm, pitch, sample_rate=sample_rate)
    loud = np.flatnonzero(np.abs(samples) > 0.02 * max(float(np.abs(samples).max()), 1e-9))
    if len(loud) == 0:
        raise ConfigError(f"espeak-ng said nothing for {word!r} with voice {voice!r}")
    margin = int(0.02 * sample_rate)
    return samples[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def colored_noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise.

    Args:
        kind: ``"white"``, ``"pink"`` or ``"brown"``.
        length: Samples.
        rng: Random generator.

    Returns:
        ``(length,)`` float32 with a root-mean-square of 1.

    Raises:
        ValueError: For an unknown kind or a non-positive length.
    """
    exponents = {"white": 0.0, "pink": 0.5, "brown": 1.0}
    if kind not in exponents:
        raise ValueError(f"kind must be one of {', '.join(exponents)}, got {kind!r}")
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length)
    frequencies[0] = frequencies[1] if length > 1 else 1.0
    noise = np.fft.irfft(spectrum / frequencies ** exponents[kind], n=length)
    noise -= noise.mean()
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def room_impulse_response(rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A simulated small room: the direct sound (1.0), then after 2 ms an exponentially
    decaying noise tail (RT60 0.15-0.6 s, the level drop to -60 dB) whose energy is 0 to
    -12 dB against the direct sound. ``(int(rt60 * sample_rate),)`` float64."""
    rt60 = rng.uniform(0.15, 0.6)
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * sample_rate)] = 0
    response = tail * 10 ** (-rng.uniform(0, 12) / 20) / max(np.sqrt(np.sum(tail**2)), 1e-9)
    response[0] = 1.0
    return response


def _silence_clip(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    kind = str(rng.choice(["white", "pink", "brown"]))
    level_db = float(rng.uniform(-70.0, -20.0))  # RMS in dB relative to full scale
    length = int(SAMPLE_RATE * CLIP_SECONDS)
    noise = colored_noise(kind, length, rng) * np.float32(10 ** (level_db / 20))
    return np.clip(noise, -1.0, 1.0), f"{kind}_{level_db:.0f}dBFS"


def _clip(samples: np.ndarray) -> np.ndarray:
    """Centres a trimmed word in one second, cropping around its centre when longer."""
    length = int(SAMPLE_RATE * CLIP_SECONDS)
    return fixed_length(samples, SAMPLE_RATE, CLIP_SECONDS, (length - len(samples)) // 2)


def _check_words(words: Sequence[str], name: str) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise ConfigError(f"{name} must be a sequence of words, got {words!r}")
    cleaned = [str(word).strip() for word in words]
    for word in cleaned:
        if not _WORD_PATTERN.match(word):
            raise ConfigError(
                f"{name} entries must be letters, digits, spaces, hyphens or apostrophes "
                f"(not starting with '_'), got {word!r}"
            )
    if len({word.lower() for word in cleaned}) != len(cleaned):
        raise ConfigError(f"{name} has duplicates: {cleaned}")
    return cleaned


def _check_grid(voices, speeds, pitches, name: str) -> None:
    if not voices or any(not isinstance(v, str) or not v.strip() for v in voices):
        raise ConfigError(f"{name} must name at least one espeak-ng voice, got {voices!r}")
    if not speeds or any(not 80 <= int(s) <= 450 for s in speeds):
        raise ConfigError(f"speeds must be words per minute in 80..450, got {speeds!r}")
    if not pitches or any(not 0 <= int(p) <= 99 for p in pitches):
        raise ConfigError(f"pitches must be in 0..99, got {pitches!r}")


def _check_voices_differ(word: str, train_voices, val_voices, speed: int, pitch: int) -> None:
    """Raises when two voices render the same audio (espeak-ng ignores some variants)."""
    seen: dict[str, str] = {}
    for voice in dict.fromkeys([*train_voices, *val_voices]):
        digest = hashlib.sha1(synthesize_word(word, voice, speed, pitch).tobytes()).hexdigest()
        if digest in seen:
            raise ConfigError(
                f"voices {seen[digest]!r} and {voice!r} sound identical in this espeak-ng "
                "(it ignores a '+variant' after some names such as 'en-gb'; use 'en+f4')"
            )
        seen[digest] = voice


def make_keyword_set(
    out_dir: str | Path,
    words: Sequence[str],
    *,
    voices: Sequence[str] = DEFAULT_TRAIN_VOICES,
    speeds: Sequence[int] = (130, 160, 190),
    pitches: Sequence[int] = (35, 50, 65),
    val_voices: Sequence[str] = DEFAULT_VAL_VOICES,
    unknown_words: Sequence[str] = DEFAULT_UNKNOWN_WORDS,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Writes a keyword-spotting set spoken by espeak-ng (layout in the module docstring).

    Every keyword is spoken with every (voice, speed, pitch) of its split: ``train`` has
    ``len(voices) * len(speeds) * len(pitches)`` clips per keyword, ``val`` has
    ``len(val_voices) * len(speeds) * len(pitches)``. ``_unknown_`` and ``_silence_`` get
    as many clips as one keyword in each split; unknown words cycle through
    ``unknown_words`` with random settings of the split's grid.

    Args:
        out_dir: Output root (its ``train`` and ``val`` must be absent or empty).
        words: The keywords; each becomes a class folder.
        voices: espeak-ng voices of the training split.
        speeds: Speaking rates in words per minute.
        pitches: Pitches, 0 to 99.
        val_voices: Voices of the validation split; none may be in ``voices``.
        unknown_words: Words of the ``_unknown_`` class (keywords among them are dropped).
        seed: Seed of the unknown-word settings and the noise.
        progress: Show a progress bar.

    Returns:
        ``out_dir``, resolved.

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: For a bad word, voice, speed or pitch, a validation voice that is also
            a training voice (or sounds identical to one), or an output folder in use.
    """
    words = _check_words(words, "words")
    if not words:
        raise ConfigError("words must name at least one keyword")
    keywords = {word.lower() for word in words}
    unknown = [w for w in _check_words(unknown_words, "unknown_words") if w.lower() not in keywords]
    _check_grid(voices, speeds, pitches, "voices")
    _check_grid(val_voices, speeds, pitches, "val_voices")
    shared = sorted(set(voices) & set(val_voices))
    if shared:
        raise ConfigError(f"val_voices must not be training voices; both name {shared}")
    _espeak()
    out_dir = Path(out_dir).expanduser().resolve()
    for split in ("train", "val"):
        if (out_dir / split).exists() and any((out_dir / split).iterdir()):
            raise ConfigError(f"output folder {out_dir / split} is not empty")
    _check_voices_differ(words[0], voices, val_voices, int(speeds[0]), int(pitches[0]))
    rng = np.random.default_rng(seed)
    jobs = []  # (split, class, file stem, word or None, voice, speed, pitch)
    counts: dict[str, dict[str, int]] = {}
    for split, split_voices in (("train", voices), ("val", val_voices)):
        grid = [(v, int(s), int(p)) for v in split_voices for s in speeds for p in pitches]
        for word in words:
            jobs.extend((split, word, _stem(word, *g), word, *g) for g in grid)
        for index in range(len(grid) if unknown else 0):
            word = unknown[index % len(unknown)]
            settings = grid[int(rng.integers(len(grid)))]
            jobs.append((split, UNKNOWN, f"{index:04d}_" + _stem(word, *settings), word, *settings))
        jobs.extend((split, SILENCE, f"{index:04d}", None, "", 0, 0) for index in range(len(grid)))
        counts[split] = {word: len(grid) for word in words}
        counts[split].update({UNKNOWN: len(grid) if unknown else 0, SILENCE: len(grid)})
    for split, name, stem, word, voice, speed, pitch in tqdm(
        jobs, desc="espeak-ng", disable=not progress, leave=False
    ):
        folder = out_dir / split / name
        folder.mkdir(parents=True, exist_ok=True)
        if word is None:
            samples, kind = _silence_clip(rng)
            stem = f"{stem}_{kind}"
        else:
            samples = _clip(synthesize_word(word, voice, speed, pitch))
        write_wav(folder / f"{stem}.wav", samples, SAMPLE_RATE)
    _write_description(out_dir, words, unknown, voices, val_voices, speeds, pitches, counts, seed)
    logger.info("wrote %d clips to %s", len(jobs), out_dir)
    return out_dir


def _stem(word: str, voice: str, speed: int, pitch: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9-]+", "_", f"{word}_{voice}")
    return f"{safe}_s{speed}_p{pitch}"


def _espeak_version() -> str:
    try:
        result = subprocess.run(
            [_espeak(), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "espeak-ng"
    return result.stdout.strip().split("  ")[0] or "espeak-ng"


def _write_description(out_dir, words, unknown, voices, val_voices, speeds, pitches, counts, seed):
    description = {
        "task": "kws",
        "names": sorted([*words, UNKNOWN, SILENCE]),
        "keywords": list(words),
        "unknown_words": list(unknown),
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": CLIP_SECONDS,
        "format": "WAV, mono, 16-bit PCM",
        "train": {"voices": list(voices), "clips": counts["train"]},
        "val": {
            "voices": list(val_voices),
            "clips": counts["val"],
            "note": "held-out voices: none of them speaks in train",
        },
        "speeds_wpm": [int(s) for s in speeds],
        "pitches": [int(p) for p in pitches],
        "silence": "white, pink or brown noise, RMS -70 to -20 dBFS",
        "generator": _espeak_version(),
        "seed": int(seed),
    }
    text = yaml.safe_dump(description, sort_keys=False, allow_unicode=True)
    (out_dir / "dataset.yaml").write_text(text, encoding="utf-8")


def load_keyword_folder(root: str | Path, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """Reads a keyword split: one sub-folder of WAV files per class, sorted by name.

    Args:
        root: The dataset root.
        split: ``"train"`` or ``"val"`` (any sub-folder of ``root``).

    Returns:
        The WAV paths, ``(N,) int64`` labels (indices into the class names) and the class
        names (``_silence_`` and ``_unknown_`` sort before lower-case words).

    Raises:
        DatasetError: The split folder is missing, has no class folders, or a class folder
            holds no WAV file.
    """
    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise DatasetError(f"split folder not found: {folder}")
    class_names = sorted(path.name for path in folder.iterdir() if path.is_dir())
    if not class_names:
        raise DatasetError(f"{folder} has no class folders (expected {folder}/<word>/*.wav)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        clips = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() == ".wav")
        if not clips:
            raise DatasetError(f"class folder {folder / name} has no .wav files")
        paths.extend(clips)
        labels.extend([label] * len(clips))
    return paths, np.asarray(labels, np.int64), class_names
