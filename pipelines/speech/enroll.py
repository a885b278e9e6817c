"""The audio side of voice enrolment (``ubiq learn --task kws``): phrase folders, WAVs cut
to their speech as ``ubiq listen`` cuts utterances, and takes recorded from a microphone.

A data folder holds one sub-folder per phrase, named by the phrase (``hey ubiq/``, or
``hey ubiq@ana/`` for a second speaker of it), with the user's WAVs of it (three is the
usual number). The templates themselves are built by
:mod:`ubiq.models.runtime.kws_enroll`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ubiq.errors import DatasetError, SourceError
from ubiq.models.runtime.audio_features import read_wav, resample, write_wav
from ubiq.pipelines.speech.recognize import SAMPLE_RATE
from ubiq.pipelines.speech.vad import SileroVad, VadSegmenter
from ubiq.types import AudioChunk

__all__ = ["read_phrase_folders", "read_utterance", "record_takes", "speech_part"]

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav",)
_BLOCK = 512


def read_phrase_folders(root: str | Path) -> dict[str, list[Path]]:
    """The enrolment WAVs of a data folder: phrase folder name -> its WAV files.

    Raises:
        DatasetError: If ``root`` is missing, has no phrase folders, or a phrase folder has
            no WAV (naming it).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root} has no phrase folders (expected {root}/<phrase>/*.wav)")
    phrases: dict[str, list[Path]] = {}
    for folder in folders:
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
        )
        if not files:
            raise DatasetError(f"phrase folder {folder} has no WAV files")
        phrases[folder.name] = files
    return phrases


def speech_part(samples: np.ndarray, vad: SileroVad | None = None) -> np.ndarray:
    """The part of a 16 kHz clip that ``ubiq listen``'s voice-activity detector would hand
    the recogniser: from the first segment's padded start to the last one's padded end
    (the whole clip when it finds no speech).
    """
    samples = np.asarray(samples, np.float32)
    segmenter = VadSegmenter(vad=vad)
    events = []
    for start in range(0, len(samples), _BLOCK):
        block = np.zeros(_BLOCK, np.float32)
        part = samples[start : start + _BLOCK]
        block[: len(part)] = part
        events += segmenter.feed(AudioChunk(block, SAMPLE_RATE, int(start * 1e9 / SAMPLE_RATE)))
    ends = [
        e for e in events + segmenter.flush() if e.kind == "speech.end" and e.samples is not None
    ]
    if not ends:
        return samples
    first = int(round((ends[0].samples_start or ends[0].t_start) * SAMPLE_RATE))
    last = ends[-1]
    stop = int(round((last.samples_start or last.t_start) * SAMPLE_RATE)) + len(last.samples)
    return samples[max(0, first) : min(len(samples), stop)]


def read_utterance(path: Path, vad: SileroVad | None = None) -> np.ndarray:
    """One enrolment WAV as 16 kHz float32, cut to its speech (:func:`speech_part`).

    Raises:
        DatasetError: If the file does not decode or holds no sound, naming it.
    """
    samples, rate = read_wav(path)  # DatasetError names the file
    if rate != SAMPLE_RATE:
        samples = resample(samples, rate, SAMPLE_RATE)
    if len(samples) < SAMPLE_RATE // 10 or float(np.abs(samples).max()) < 1e-4:
        raise DatasetError(f"{path} holds no speech (silent or shorter than 0.1 s)")
    return speech_part(samples, vad)


def record_takes(
    folder: Path,
    phrase: str,
    *,
    times: int = 3,
    seconds: float = 2.5,
    microphone: str = "mic",
    prompt: Callable[[str], None],
) -> list[Path]:
    """Records ``times`` takes of a phrase from a microphone into ``folder`` as 16 kHz WAVs
    (``take-1.wav``, ... after any takes already there).

    Args:
        folder: The phrase folder (created).
        phrase: What the user is asked to say.
        times: Number of takes.
        seconds: Length of each take.
        microphone: ``mic``, ``mic:INDEX`` or ``mic:NAME`` (sounddevice).
        prompt: Shows the user what to do (the CLI prints a line).

    Raises:
        SourceError: If the microphone cannot be opened or gives no audio.
    """
    from ubiq.hardware.sources.audio import open_audio_source

    if not microphone.startswith("mic"):
        raise SourceError(f"--mic must be mic, mic:INDEX or mic:NAME, got {microphone!r}")
    show = prompt
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("take-*.wav")))
    wanted = int(round(seconds * SAMPLE_RATE))
    written = []
    for take in range(1, times + 1):
        source = open_audio_source(microphone)
        show(f"take {take}/{times}: say {phrase!r} now ({seconds:g} s)")
        parts, have = [], 0
        with source:
            for chunk in source:
                block = np.asarray(chunk.samples)
                if block.dtype == np.int16:
                    block = block.astype(np.float32) / 32768.0
                parts.append(block.astype(np.float32))
                have += len(block)
                if have >= wanted:
                    break
        if not parts:
            raise SourceError(f"microphone {microphone} gave no audio")
        path = folder / f"take-{existing + take}.wav"
        write_wav(path, np.concatenate(parts)[:wanted], SAMPLE_RATE)
        written.append(path)
    show(f"recorded {len(written)} takes into {folder}")
    return written
