"""Streaming voice activity detection: Silero VAD in onnxruntime and the segmenter."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from ubiq.errors import BackendUnavailable, ModelError
from ubiq.pipelines.speech import vad as vad_module
from ubiq.pipelines.speech.vad import (
    FRAME_SAMPLES,
    SileroVad,
    VadOptions,
    VadSegmenter,
    find_silero_model,
)
from ubiq.types import AudioChunk

RATE = 16000
FRAME_S = FRAME_SAMPLES / RATE

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)"
)


@pytest.fixture(scope="module")
def silero() -> SileroVad:
    try:
        return SileroVad()
    except BackendUnavailable as error:
        pytest.skip(str(error))


class ScriptedVad:
    """A stand-in model that returns scripted probabilities, one per frame."""

    def __init__(self, probabilities):
        self.probabilities = list(probabilities)
        self.index = 0

    def reset(self):
        self.index = 0

    def probability(self, chunk):
        assert chunk.shape == (FRAME_SAMPLES,)
        value = self.probabilities[self.index] if self.index < len(self.probabilities) else 0.0
        self.index += 1
        return value


def stream(segmenter, samples, chunk_samples=FRAME_SAMPLES, start_ns=0):
    """Feeds ``samples`` in chunks, then flushes; returns all events."""
    events = []
    for first in range(0, len(samples), chunk_samples):
        timestamp_ns = start_ns + first * 1_000_000_000 // RATE
        events += segmenter.feed(
            AudioChunk(samples[first : first + chunk_samples], RATE, timestamp_ns)
        )
    return events + segmenter.flush()


def kinds(events):
    return [event.kind for event in events]


# --- the model ----------------------------------------------------------------------------


def test_model_is_found_in_the_installed_package_without_importing_it():
    path = find_silero_model()
    assert path.name == "silero_vad.onnx" and path.is_file()
    # Neither torch nor the silero_vad package is imported on the way.
    code = (
        "import sys, numpy as np\n"
        "from ubiq.pipelines.speech.vad import SileroVad\n"
        "p = SileroVad().probability(np.zeros(512, np.float32))\n"
        "assert 0.0 <= p < 0.1, p\n"
        "bad = [m for m in ('torch', 'silero_vad') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_package_and_bad_files_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="Silero VAD model not found: .*nowhere.onnx"):
        SileroVad(tmp_path / "nowhere.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load Silero VAD model"):
        SileroVad(corrupt)
    with pytest.raises(ValueError, match="threads"):
        SileroVad(threads=0)
    monkeypatch.setattr(vad_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match="pip install --no-deps silero-vad"):
        find_silero_model()


def test_other_onnx_models_are_refused(tmp_path):
    from support import one_op_onnx

    path = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 576], [1, 576])
    with pytest.raises(ModelError, match="not a Silero VAD v5 model"):
        SileroVad(path)


@needs_espeak
def test_probability_streams_and_reset_restarts(silero):
    from ubiq.models.datasets.commands import make_clip

    clip = make_clip("turn on the light", "en-us", 160, 50, snr_db=None, lead_s=0.64)
    frames = clip.samples[: len(clip.samples) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, 512)
    silero.reset()
    first = np.array([silero.probability(frame) for frame in frames])
    silero.reset()
    again = np.array([silero.probability(frame) for frame in frames])
    np.testing.assert_array_equal(first, again)
    onset = round(clip.t_start / FRAME_S)
    assert first[:onset].max() < 0.1
    assert first[onset : onset + 20].mean() > 0.9
    # State and context carry over: the same frame scores differently after speech.
    silero.reset()
    fresh = silero.probability(frames[onset + 5])
    assert abs(fresh - first[onset + 5]) > 1e-3
    with pytest.raises(ValueError, match=r"chunk must have shape \(512,\)"):
        silero.probability(np.zeros(480, np.float32))


# --- the segmenter on scripted probabilities ------------------------------------------------


def test_segment_timing_padding_and_audio_follow_the_rules():
    probabilities = [0.0] * 10 + [0.9] * 10 + [0.0] * 10
    samples = (np.arange(30 * FRAME_SAMPLES) / (30 * FRAME_SAMPLES)).astype(np.float32)
    segmenter = VadSegmenter(VadOptions(), ScriptedVad(probabilities))
    start, end = stream(segmenter, samples)
    assert (start.kind, end.kind) == ("speech.start", "speech.end")
    # Onset at frame 10 (0.32 s), padded by 30 ms; confirmed once 150 ms long (frame 14).
    assert start.t_start == start.t_end == pytest.approx(0.32 - 0.03)
    assert start.emitted_at == pytest.approx(15 * FRAME_S)
    assert start.samples is None
    # Silence from frame 20 (0.64 s); 128 ms of it ends the segment at the end of frame 23.
    assert end.t_start == pytest.approx(0.29)
    assert end.t_end == pytest.approx(0.64 + 0.03)
    assert end.emitted_at == pytest.approx(24 * FRAME_S)
    np.testing.assert_array_equal(end.samples, samples[round(0.29 * RATE) : round(0.67 * RATE)])
    assert end.duration_s == pytest.approx(0.38)


def test_short_blips_give_no_event_and_hysteresis_holds_a_segment():
    blip = [0.0] * 5 + [0.9] * 3 + [0.0] * 10  # 96 ms < min_speech_ms
    assert stream(VadSegmenter(vad=ScriptedVad(blip)), np.zeros(20 * 512, np.float32)) == []
    # Probabilities between neg_threshold and threshold neither end nor restart a segment.
    held = [0.9] * 10 + [0.47] * 20 + [0.9] * 5 + [0.0] * 6
    events = stream(VadSegmenter(vad=ScriptedVad(held)), np.zeros(41 * 512, np.float32))
    assert kinds(events) == ["speech.start", "speech.end"]
    assert events[1].t_end == pytest.approx(35 * FRAME_S + 0.03)
    # neg_threshold=None resolves to threshold - 0.05; an explicit value is kept.
    options = VadOptions(neg_threshold=0.35)
    assert options.exit_threshold == 0.35 and VadOptions().exit_threshold == 0.45


def test_max_speech_splits_and_flush_closes_an_open_segment():
    options = VadOptions(max_speech_s=1.0)
    events = stream(
        VadSegmenter(options, ScriptedVad([0.9] * 110)), np.zeros(110 * 512, np.float32)
    )
    ends = [event for event in events if event.kind == "speech.end"]
    assert kinds(events) == ["speech.start", "speech.end"] * len(ends) and len(ends) == 4
    for previous, event in zip(ends, ends[1:], strict=False):
        assert event.t_start >= previous.t_end
    assert all(event.duration_s <= 1.0 + FRAME_S for event in ends)
    # The last segment was still open at the end of the stream: flush ended it there.
    assert ends[-1].t_end == pytest.approx(110 * FRAME_S)


def test_chunk_sizes_int16_and_time_offsets_do_not_change_the_segments():
    probabilities = [0.0] * 10 + [0.9] * 12 + [0.0] * 12
    samples = np.zeros(34 * FRAME_SAMPLES, np.float32)
    reference = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples)
    odd = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples, chunk_samples=700)
    as_int16 = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples.astype(np.int16))
    later = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples, start_ns=5 * 10**9)
    expected = [value for e in reference for value in (e.t_start, e.t_end, e.emitted_at)]
    assert kinds(reference) == ["speech.start", "speech.end"]
    for events in (odd, as_int16, later):
        assert kinds(events) == kinds(reference)
    for events in (odd, as_int16):
        times = [value for e in events for value in (e.t_start, e.t_end, e.emitted_at)]
        assert times == pytest.approx(expected, abs=1e-9)
    assert [e.t_start - 5 for e in later] == pytest.approx([e.t_start for e in reference])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 1.5),
        ("threshold", True),
        ("neg_threshold", 0.8),
        ("min_speech_ms", -1),
        ("min_silence_ms", -10),
        ("speech_pad_ms", float("nan")),
        ("max_speech_s", 0.2),
    ],
)
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        VadOptions(**{field: value})


def test_bad_stream_input_is_refused():
    segmenter = VadSegmenter(vad=ScriptedVad([]))
    with pytest.raises(ValueError, match="sample_rate must be 16000"):
        VadSegmenter(vad=ScriptedVad([]), sample_rate=8000)
    with pytest.raises(TypeError, match="AudioChunk"):
        segmenter.feed(np.zeros(512, np.float32))
    with pytest.raises(ValueError, match="chunk.sample_rate must be 16000"):
        segmenter.feed(AudioChunk(np.zeros(256, np.float32), 8000, 0))


# --- the segmenter with Silero VAD on spoken clips -----------------------------------------

CLIPS = [
    ("turn on the light", "en-us", 160),
    ("what time is it", "en-gb-scotland+m5", 160),
    ("open the door", "en+f4", 130),
    ("play music", "en-us+f3", 190),
]


@pytest.fixture(scope="module")
def spoken():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    from ubiq.models.datasets.commands import make_clip

    rng = np.random.default_rng(0)
    return {
        (text, snr): make_clip(text, voice, speed, 50, snr_db=snr, lead_s=0.71, rng=rng)
        for text, voice, speed in CLIPS
        for snr in (None, 10.0)
    }


@pytest.mark.parametrize("snr_db", [None, 10.0])
def test_one_segment_per_utterance_near_the_true_bounds(silero, spoken, snr_db):
    segmenter = VadSegmenter(vad=silero)
    end_errors = []
    for text, _, _ in CLIPS:
        clip = spoken[(text, snr_db)]
        events = stream(segmenter, clip.samples)
        assert kinds(events) == ["speech.start", "speech.end"], (text, snr_db)
        start, end = events
        assert start.t_start == end.t_start
        assert abs(end.t_start - clip.t_start) <= 0.1, (text, snr_db)
        end_errors.append(end.t_end - clip.t_end)
        # speech.end is out within 300 ms of the end of speech (audio time).
        assert 0.0 < end.emitted_at - clip.t_end <= 0.3, (text, snr_db)
        assert len(end.samples) == pytest.approx((end.t_end - end.t_start) * RATE, abs=1)
        first = round(end.t_start * RATE)
        np.testing.assert_array_equal(end.samples, clip.samples[first : first + len(end.samples)])
    # Ends come late, not early: Silero's probability decays a few frames after the speech
    # stops (more in noise), and 30 ms of padding is added. Over 60 phrases (see
    # benchmarks/vad_bounds.py) the worst end is 100-150 ms late clean and ~240 ms at 10 dB.
    assert np.mean(np.abs(end_errors)) <= 0.1, end_errors
    assert max(np.abs(end_errors)) <= 0.15, end_errors
    assert min(end_errors) >= -0.05, end_errors


def test_silence_and_noise_alone_give_no_event(silero):
    segmenter = VadSegmenter(vad=silero)
    assert stream(segmenter, np.zeros(3 * RATE, np.float32)) == []
    noise = (0.03 * np.random.default_rng(1).standard_normal(3 * RATE)).astype(np.float32)
    assert stream(segmenter, noise) == []


def test_two_utterances_a_second_apart_are_two_segments(silero, spoken):
    first, second = spoken[("turn on the light", 10.0)], spoken[("open the door", 10.0)]
    cut = round(first.t_end * RATE)
    lead = first.samples[: round(first.t_start * RATE)]
    # The same noise level, so that the speech ends are exactly 1 s apart from the starts.
    filler = np.sqrt(np.mean(lead**2)) * np.random.default_rng(2).standard_normal(
        round((1.0 - second.t_start) * RATE)
    )
    samples = np.concatenate([first.samples[:cut], filler.astype(np.float32), second.samples])
    offset = (cut + len(filler)) / RATE
    assert offset + second.t_start == pytest.approx(first.t_end + 1.0, abs=1e-3)
    events = stream(VadSegmenter(vad=silero), samples)
    assert kinds(events) == ["speech.start", "speech.end"] * 2
    ends = [event for event in events if event.kind == "speech.end"]
    assert abs(ends[0].t_start - first.t_start) <= 0.1
    assert abs(ends[1].t_start - (offset + second.t_start)) <= 0.1
    assert ends[0].t_end < offset + second.t_start
    assert abs(ends[1].t_end - (offset + second.t_end)) <= 0.2


def test_reset_forgets_a_stream_midway(silero, spoken):
    clip = spoken[("what time is it", None)]
    fresh = stream(VadSegmenter(vad=SileroVad()), clip.samples)
    segmenter = VadSegmenter(vad=silero)
    half = round((clip.t_start + 0.5) * RATE) // FRAME_SAMPLES * FRAME_SAMPLES
    partial = []
    for first in range(0, half, FRAME_SAMPLES):
        chunk = AudioChunk(clip.samples[first : first + FRAME_SAMPLES], RATE, first * 62_500)
        partial += segmenter.feed(chunk)
    assert kinds(partial) == ["speech.start"] and segmenter.in_speech
    segmenter.reset()
    assert not segmenter.in_speech
    again = stream(segmenter, clip.samples)
    assert [(e.kind, e.t_start, e.t_end, e.emitted_at) for e in again] == [
        (e.kind, e.t_start, e.t_end, e.emitted_at) for e in fresh
    ]
