"""Where espeak-ng's synthesiser put the phonemes of an utterance (libespeak-ng, ctypes).

The espeak-ng program writes audio but not the timing of what it says. Its library,
``libespeak-ng.so.1`` (installed with the program by Debian's ``espeak-ng`` package),
reports a *phoneme event* at the sample where each phoneme starts, and a pause phoneme
(``_``, ``_:``) where speech stops. :func:`speech_end` returns the end of the last spoken
phoneme: the end of speech as the synthesiser made it.

That is the true end of speech for a test clip, not the last audible sample: some
espeak-ng voice variants add an echo (``+f2`` to ``+f5``: ``echo 130 15`` in the variant
file adds a copy of the voice 130 ms later at 15/256 of its amplitude, -25 dB), which
rings on for up to ~130 ms after the last phoneme, like a room's reverberation.

The library keeps some state between utterances (the times of the same phrase move by a
few samples from one call to the next), so every call runs in a fresh process, as the
``espeak-ng`` program does: this file run as a script prints the times as JSON. A fresh
library speaks exactly the samples ``espeak-ng -w`` writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import subprocess
import sys

__all__ = ["phoneme_times", "speech_end"]

logger = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_AUTO = 0
_ENDPAUSE = 0x1000
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_EVENT_LIST_TERMINATED, _EVENT_END, _EVENT_MSG_TERMINATED, _EVENT_PHONEME = 0, 5, 6, 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT in speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):  # espeak_VOICE in speak_lib.h
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Library:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS
        )
        if self.rate <= 0:
            raise OSError(f"espeak_Initialize failed ({self.rate})")
        self.samples = 0
        self.events: list[tuple[int, int, str]] = []
        self._callback = _Callback(self._on_audio)  # keep a reference: the library holds it
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip

    def _on_audio(self, wav, count, events) -> int:
        self.samples += max(0, int(count))
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            name = (
                event.id.string.decode("ascii", "replace") if event.type == _EVENT_PHONEME else ""
            )
            self.events.append((int(event.type), int(event.sample), name))
            index += 1
        return 0

    def phonemes(self, text: str, voice: str, speed: int, pitch: int) -> list[tuple[float, str]]:
        self.samples, self.events = 0, []
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            # as the espeak-ng program does: a language such as "en-gb" names no voice file
            wanted = _Voice(languages=voice.encode())
            if self.lib.espeak_SetVoiceByProperties(ctypes.byref(wanted)) != 0:
                raise ValueError(f"libespeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, int(speed), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        data = ctypes.create_string_buffer(text.encode())
        status = self.lib.espeak_Synth(
            data, len(data), 0, 0, 0, _CHARS_AUTO | _ENDPAUSE, None, None
        )
        if status != 0:
            raise ValueError(f"libespeak-ng could not speak {text!r} (status {status})")
        times = [
            (sample / self.rate, name)
            for kind, sample, name in self.events
            if kind == _EVENT_PHONEME
        ]
        ends = [
            sample for kind, sample, _ in self.events if kind in (_EVENT_END, _EVENT_MSG_TERMINATED)
        ]
        times.append((max([self.samples, *ends]) / self.rate, "_"))  # the end of the audio
        return times


def _library() -> _Library | None:
    try:
        lib = ctypes.CDLL("libespeak-ng.so.1")  # Debian's libespeak-ng1
    except OSError:
        name = ctypes.util.find_library("espeak-ng")  # slow: runs ldconfig
        try:
            lib = ctypes.CDLL(name or "libespeak-ng.so")
        except OSError as error:
            logger.debug("libespeak-ng not loadable (%s): no phoneme times", error)
            return None
    try:
        return _Library(lib)
    except OSError as error:
        logger.debug("libespeak-ng failed (%s): no phoneme times", error)
        return None


def phoneme_times(text: str, voice: str, speed: int, pitch: int) -> list[tuple[float, str]] | None:
    """``(start seconds, phoneme)`` of every phoneme espeak-ng says, pauses (``_``...)
    included, ending with ``(end of the audio, "_")``; ``None`` without libespeak-ng.

    Runs the library in a fresh process (module docstring), so the same arguments always
    give the same times.

    Raises:
        ValueError: If the library has no such voice or cannot speak the text.
    """
    times = _times(text, voice, int(speed), int(pitch))
    return None if times is None else list(times)


@functools.lru_cache(maxsize=4096)  # the same phrase is often made at several SNRs
def _times(text: str, voice: str, speed: int, pitch: int) -> tuple[tuple[float, str], ...] | None:
    command = [sys.executable, "-S", __file__, text, voice, str(speed), str(pitch)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("no phoneme times: %s", error)
        return None
    if result.returncode == 3:
        return None  # no library
    if result.returncode != 0:
        raise ValueError((result.stderr.strip().splitlines() or ["libespeak-ng failed"])[-1])
    return tuple((float(t), str(name)) for t, name in json.loads(result.stdout))


def speech_end(text: str, voice: str, speed: int, pitch: int) -> float | None:
    """Seconds from the start of espeak-ng's audio to the end of its last spoken phoneme
    (the start of the pause after it); ``None`` without libespeak-ng, for a voice or text
    the library refuses, or when it reports no phoneme."""
    try:
        times = phoneme_times(text, voice, speed, pitch)
    except ValueError as error:
        logger.debug("no phoneme times: %s", error)
        return None
    if not times:
        return None
    spoken = [i for i, (_, name) in enumerate(times) if name and not name.startswith("_")]
    if not spoken:
        return None
    return times[spoken[-1] + 1][0]


def _main(argv: list[str]) -> int:
    text, voice, speed, pitch = argv
    library = _library()
    if library is None:
        return 3
    try:
        times = library.phonemes(text, voice, int(speed), int(pitch))
    except ValueError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    sys.stdout.write(json.dumps(times) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
