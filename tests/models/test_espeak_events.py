"""Phoneme times from libespeak-ng: the true end of speech of a synthesised clip."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ubiq.models.datasets.espeak_events import phoneme_times, speech_end

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_phonemes_come_in_order_and_end_with_the_audio():
    times = phoneme_times("stop", "en-us", 160, 50)
    assert times is not None
    names = [name for _, name in times]
    spoken = [name for name in names if not name.startswith("_")]
    assert spoken[0] == "s" and spoken[-1] == "p", names
    starts = [t for t, _ in times]
    assert starts == sorted(starts) and starts[0] >= 0
    assert names[-1] == "_" and 0.3 < starts[-1] < 2.0  # the end of the audio


def test_speech_ends_before_an_echo_and_with_the_sound_without_one():
    from ubiq.models.datasets.commands import SPEECH_PEAK, speech_bounds, synthesize

    for voice, echo in (("en-us", False), ("en+f4", True)):
        audio = synthesize("turn on the light", voice, 160, 50)
        audio = audio * np.float32(SPEECH_PEAK / np.abs(audio).max())
        _, audible_end = speech_bounds(audio, 16000)
        end = speech_end("turn on the light", voice, 160, 50)
        if echo:  # +f4 repeats the voice 130 ms later at 15/256
            assert 0.05 < audible_end - end < 0.16
        else:
            assert abs(audible_end - end) < 0.015


def test_a_language_name_works_and_an_unknown_voice_gives_none():
    assert speech_end("go back", "en-gb", 150, 50) is not None  # a language, not a voice file
    assert speech_end("go back", "xx-nope", 150, 50) is None
    with pytest.raises(ValueError, match="no voice"):
        phoneme_times("go back", "xx-nope", 150, 50)


def test_times_do_not_depend_on_what_was_said_before():
    from ubiq.models.datasets.espeak_events import _times

    first = _times.__wrapped__("stop", "en+f4", 130, 50)  # uncached: a new process each
    _times.__wrapped__("turn on the kitchen light", "en-gb-scotland+m5", 170, 35)
    assert _times.__wrapped__("stop", "en+f4", 130, 50) == first
