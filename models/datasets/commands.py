"""Spoken-command clips with known speech boundaries, for the speech benchmark and tests.

:func:`make_clip` speaks a phrase with Debian's ``espeak-ng``, trims espeak-ng's own
silence, places the speech between ``lead_s`` of silence before and ``tail_s`` after, and
optionally adds noise at a chosen signal-to-noise ratio. Because the speech is placed by
this code, the true speech boundaries (:attr:`Clip.t_start`, :attr:`Clip.t_end`) are
known to the sample, which is what a voice-activity detector's boundaries are measured
against.

:func:`make_command_set` writes a grid of such clips (phrases x voices x speeds x pitches x
SNRs) as 16 kHz mono 16-bit WAV files plus ``index.jsonl``; :func:`load_command_set`
reads the index back.

Definitions used throughout:

- *Speech boundaries* are the first and last samples of espeak-ng's output whose
  magnitude exceeds :data:`SPEECH_AMPLITUDE` (espeak-ng writes exact digital silence
  around an utterance, so this is accurate to well under a millisecond).
- *SNR* is ``10 * log10(P_speech / P_noise)`` where ``P_speech`` is the mean power of the
  clean clip over the speech part only (``t_start`` to ``t_end``) and ``P_noise`` the mean
  power of the noise, which is added over the whole clip. Noise is made with numpy from
  the seeded generator (deterministic; no sox needed).

numpy and the stdlib only: importing this module never imports torch.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ubiq.errors import ConfigError, DatasetError
from ubiq.models.datasets.espeak_events import speech_end
from ubiq.models.datasets.speech import _check_grid, _check_words, _espeak, colored_noise, speak
from ubiq.models.runtime.audio_features import write_wav

__all__ = [
    "SPEECH_AMPLITUDE",
    "SPEECH_PEAK",
    "Clip",
    "load_command_set",
    "make_clip",
    "make_command_set",
    "speech_bounds",
    "synthesize",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPEECH_AMPLITUDE = 1e-3
"""Magnitude (of full scale) above which a sample counts as speech in :func:`speech_bounds`."""
SPEECH_PEAK = 0.5
"""Peak magnitude the speech of every clip is scaled to (-6 dBFS), before noise is added."""
INDEX_KEYS = ("file", "text", "is_command", "voice", "speed", "pitch", "snr_db", "t_start", "t_end")


@dataclass(frozen=True)
class Clip:
    """One spoken phrase in silence or noise, with its true speech boundaries.

    Attributes:
        samples: ``(N,)`` float32 mono samples in ``[-1, 1]``.
        sample_rate: Samples per second.
        text: The phrase spoken.
        voice: The espeak-ng voice.
        speed: Speaking rate in words per minute.
        pitch: espeak-ng pitch, 0 to 99.
        snr_db: Signal-to-noise ratio of the added noise (module docstring), or ``None``
            for a clean clip (exact digital silence around the speech).
        t_start: Time of the first speech sample in seconds from the clip start.
        t_end: End of the last phoneme in seconds from the clip start, as espeak-ng's
            synthesiser placed it (:mod:`ubiq.models.datasets.espeak_events`), or, where
            it ends later or libespeak-ng is missing, the time just after the last sample
            above :data:`SPEECH_AMPLITUDE`. Voice variants with an echo (``+f2`` to
            ``+f5``) ring on for up to ~150 ms after ``t_end``, like a room's reverberation.
    """

    samples: np.ndarray
    sample_rate: int
    text: str
    voice: str
    speed: int
    pitch: int
    snr_db: float | None
    t_start: float
    t_end: float

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return len(self.samples) / self.sample_rate


def synthesize(
    text: str, voice: str, speed: int, pitch: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speaks ``text`` with espeak-ng, untrimmed, resampled to ``sample_rate``.

    Args:
        text: The phrase to speak.
        voice: An espeak-ng voice, optionally with a variant (``"en-us+f3"``).
        speed: Speaking rate in words per minute (80 to 450).
        pitch: Pitch, 0 to 99.
        sample_rate: Output samples per second (espeak-ng speaks at 22050 Hz).

    Returns:
        ``(N,)`` float32 samples in ``[-1, 1]``, with espeak-ng's leading and trailing
        silence kept (see :func:`speech_bounds`).

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: For an empty text or bad settings, or when espeak-ng rejects the voice
            or says nothing.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"text must be a non-empty string, got {text!r}")
    _check_grid([voice], [speed], [pitch], "voice")
    return speak(text, voice, int(speed), int(pitch), sample_rate=sample_rate)


def speech_bounds(samples: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Start and end of the speech in a clean (noise-free) recording.

    Args:
        samples: ``(N,)`` float samples of clean speech, such as :func:`synthesize` returns.
        sample_rate: Samples per second.

    Returns:
        ``(start_s, end_s)``: the time of the first sample whose magnitude exceeds
        :data:`SPEECH_AMPLITUDE` and the time just after the last one.

    Raises:
        ValueError: For a non-1-D input, a bad rate, or samples with no speech.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must have shape (N,), got {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    loud = np.flatnonzero(np.abs(samples) > SPEECH_AMPLITUDE)
    if len(loud) == 0:
        raise ValueError(f"samples have no sample above {SPEECH_AMPLITUDE} (no speech)")
    return float(loud[0] / sample_rate), float((loud[-1] + 1) / sample_rate)


def make_clip(
    text: str,
    voice: str,
    speed: int,
    pitch: int,
    *,
    snr_db: float | None,
    lead_s: float = 0.8,
    tail_s: float = 0.8,
    noise: str = "white",
    rng: np.random.Generator | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Clip:
    """Speaks a phrase and places it between known stretches of silence or noise.

    The speech is scaled to a peak of :data:`SPEECH_PEAK`, trimmed to its
    :func:`speech_bounds` at that level (so an echo after the last phoneme stays in the
    audio, though ``t_end`` is the end of that phoneme), and placed after ``lead_s`` seconds
    of silence
    with ``tail_s`` seconds after it. With ``snr_db`` set, noise of that SNR (relative to
    the speech power over the speech part only) is added over the whole clip, and the sum
    is clipped to ``[-1, 1]`` (which only very low SNRs reach).

    Args:
        text: The phrase to speak.
        voice: An espeak-ng voice.
        speed: Speaking rate in words per minute (80 to 450).
        pitch: Pitch, 0 to 99.
        snr_db: Signal-to-noise ratio in dB, or ``None`` for a clean clip.
        lead_s: Seconds before the speech.
        tail_s: Seconds after the speech.
        noise: ``"white"``, ``"pink"`` or ``"brown"``.
        rng: Random generator of the noise (a fresh unseeded one when ``None``).
        sample_rate: Samples per second.

    Returns:
        The :class:`Clip`; ``t_start == round(lead_s * sample_rate) / sample_rate``.

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: For bad settings or when espeak-ng says nothing.
        ValueError: For a negative ``lead_s`` or ``tail_s``, a non-finite ``snr_db`` or an
            unknown noise kind.
    """
    if not lead_s >= 0:
        raise ValueError(f"lead_s must be >= 0, got {lead_s}")
    if not tail_s >= 0:
        raise ValueError(f"tail_s must be >= 0, got {tail_s}")
    if snr_db is not None and not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number or None, got {snr_db}")
    if noise not in ("white", "pink", "brown"):
        raise ValueError(f"noise must be one of white, pink, brown, got {noise!r}")
    speech = synthesize(text, voice, speed, pitch, sample_rate)
    peak = float(np.abs(speech).max()) if len(speech) else 0.0
    if peak <= 0.0:
        raise ConfigError(f"espeak-ng said nothing for {text!r} with {voice!r}")
    # Scale first, so that the bounds are those of the audio written to the clip.
    speech = speech * np.float32(SPEECH_PEAK / peak)
    start_s, end_s = speech_bounds(speech, sample_rate)
    # The last phoneme can end before the last audible sample: voice variants with an echo
    # ring on after it. That ringing stays in the audio, but it is not speech.
    spoken_end_s = speech_end(text, voice, speed, pitch)
    said_s = min(end_s, spoken_end_s) - start_s if spoken_end_s is not None else end_s - start_s
    speech = speech[round(start_s * sample_rate) : round(end_s * sample_rate)]
    lead, tail = round(lead_s * sample_rate), round(tail_s * sample_rate)
    samples = np.zeros(lead + len(speech) + tail, np.float32)
    samples[lead : lead + len(speech)] = speech
    if snr_db is not None:
        rng = rng if rng is not None else np.random.default_rng()
        speech_power = float(np.mean(speech.astype(np.float64) ** 2))
        noise_rms = np.sqrt(speech_power / 10 ** (snr_db / 10))
        samples += colored_noise(noise, len(samples), rng) * np.float32(noise_rms)
        samples = np.clip(samples, -1.0, 1.0)
    return Clip(
        samples=samples.astype(np.float32, copy=False),
        sample_rate=int(sample_rate),
        text=text,
        voice=voice,
        speed=int(speed),
        pitch=int(pitch),
        snr_db=None if snr_db is None else float(snr_db),
        t_start=lead / sample_rate,
        t_end=lead / sample_rate + max(said_s, 1 / sample_rate),
    )


def make_command_set(
    out_dir: str | Path,
    commands: Sequence[str],
    non_commands: Sequence[str],
    voices: Sequence[str],
    speeds: Sequence[int],
    pitches: Sequence[int] = (50,),
    snrs: Sequence[float | None] = (None, 20, 10),
    seed: int = 0,
    *,
    lead_s: float = 0.8,
    tail_s: float = 0.8,
    noise: str = "white",
    progress: bool = True,
) -> Path:
    """Writes every phrase with every (voice, speed, pitch, SNR) as a WAV file plus an index.

    Each clip is made by :func:`make_clip` and written as 16 kHz mono 16-bit PCM to
    ``out_dir/NNNNN_<text>_<voice>_s<speed>_p<pitch>_<snr>.wav``. ``out_dir/index.jsonl``
    has one JSON object per clip with the keys ``file`` (relative to ``out_dir``),
    ``text``, ``is_command``, ``voice``, ``speed``, ``pitch``, ``snr_db`` (``null`` for
    clean), ``t_start`` and ``t_end`` (true speech boundaries in seconds).

    Args:
        out_dir: Output folder (absent or empty).
        commands: Phrases that are commands.
        non_commands: Other phrases (distractors); none may also be a command.
        voices: espeak-ng voices.
        speeds: Speaking rates in words per minute.
        pitches: Pitches, 0 to 99.
        snrs: SNRs in dB; ``None`` makes clean clips.
        seed: Seed of the noise.
        lead_s: Seconds of silence or noise before each phrase.
        tail_s: Seconds after each phrase.
        noise: ``"white"``, ``"pink"`` or ``"brown"``.
        progress: Show a progress bar.

    Returns:
        ``out_dir``, resolved.

    Raises:
        BackendUnavailable: espeak-ng is not installed.
        ConfigError: For a bad phrase, voice, speed, pitch or SNR, a phrase in both lists,
            or an output folder that is not empty.
    """
    commands = _check_words(commands, "commands")
    non_commands = _check_words(non_commands, "non_commands")
    if not commands and not non_commands:
        raise ConfigError("commands and non_commands are both empty; nothing to speak")
    both = sorted({c.lower() for c in commands} & {n.lower() for n in non_commands})
    if both:
        raise ConfigError(f"non_commands must not repeat commands; both name {both}")
    _check_grid(voices, speeds, pitches, "voices")
    if not snrs or any(s is not None and not np.isfinite(float(s)) for s in snrs):
        raise ConfigError(f"snrs must be finite numbers in dB or None, got {snrs!r}")
    _espeak()
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"output folder {out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    phrases = [(text, True) for text in commands] + [(text, False) for text in non_commands]
    jobs = [
        (text, is_command, voice, int(speed), int(pitch), None if snr is None else float(snr))
        for text, is_command in phrases
        for voice in voices
        for speed in speeds
        for pitch in pitches
        for snr in snrs
    ]
    with (out_dir / "index.jsonl").open("w", encoding="utf-8") as index:
        for number, (text, is_command, voice, speed, pitch, snr) in enumerate(
            tqdm(jobs, desc="espeak-ng", disable=not progress, leave=False)
        ):
            clip = make_clip(
                text,
                voice,
                speed,
                pitch,
                snr_db=snr,
                lead_s=lead_s,
                tail_s=tail_s,
                noise=noise,
                rng=rng,
            )
            name = f"{number:05d}_{_stem(text, voice, speed, pitch, snr)}.wav"
            write_wav(out_dir / name, clip.samples, clip.sample_rate)
            record = {
                "file": name,
                "text": text,
                "is_command": is_command,
                "voice": voice,
                "speed": speed,
                "pitch": pitch,
                "snr_db": snr,
                "t_start": round(clip.t_start, 6),
                "t_end": round(clip.t_end, 6),
            }
            index.write(json.dumps(record) + "\n")
    logger.info("wrote %d clips to %s", len(jobs), out_dir)
    return out_dir


def _stem(text: str, voice: str, speed: int, pitch: int, snr: float | None) -> str:
    safe = re.sub(r"[^A-Za-z0-9-]+", "_", f"{text}_{voice}").strip("_")
    level = "clean" if snr is None else f"snr{snr:g}"
    return f"{safe}_s{speed}_p{pitch}_{level}"


def load_command_set(root: str | Path) -> list[dict]:
    """Reads ``index.jsonl`` of a folder written by :func:`make_command_set`.

    Args:
        root: The folder.

    Returns:
        One dict per clip with the index keys, plus ``path`` (the WAV file's absolute
        :class:`~pathlib.Path`).

    Raises:
        DatasetError: The index is missing or malformed, or names a missing file.
    """
    root = Path(root).expanduser().resolve()
    index = root / "index.jsonl"
    if not index.is_file():
        raise DatasetError(f"{index} not found (write one with make_command_set)")
    records = []
    for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{index} line {number} is not JSON: {error}") from error
        missing = [key for key in INDEX_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise DatasetError(f"{index} line {number} lacks {', '.join(missing)}")
        path = root / str(record["file"])
        if not path.is_file():
            raise DatasetError(f"{index} line {number} names a missing file: {path}")
        records.append({**record, "path": path})
    return records
