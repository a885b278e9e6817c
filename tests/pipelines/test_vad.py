"""Streaming voice activity detection: Silero VAD in onnxruntime and the segmenter."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ubiq.errors import BackendUnavailable, ModelError
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
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
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


def scripted(spans, total_s, probability=0.9):
    """One probability per frame: ``probability`` in the frames that overlap ``spans``."""
    frames = int(np.ceil(total_s / FRAME_S))
    values = [0.0] * frames
    for start_s, end_s in spans:
        for index in range(int(start_s // FRAME_S), min(frames, int(np.ceil(end_s / FRAME_S)))):
            values[index] = probability
    return values


def bursts(spans, total_s, noise_rms=1e-4, burst_rms=0.1, seed=0):
    """White noise with louder white-noise bursts over ``spans`` (seconds)."""
    rng = np.random.default_rng(seed)
    samples = noise_rms * rng.standard_normal(round(total_s * RATE))
    for start_s, end_s in spans:
        first, last = round(start_s * RATE), round(end_s * RATE)
        samples[first:last] += burst_rms * rng.standard_normal(last - first)
    return samples.astype(np.float32)


def test_model_only_segments_follow_the_rules_on_the_frame_grid():
    probabilities = [0.0] * 10 + [0.9] * 10 + [0.0] * 10
    samples = (np.arange(30 * FRAME_SAMPLES) / (30 * FRAME_SAMPLES)).astype(np.float32)
    segmenter = VadSegmenter(VadOptions(energy=False), ScriptedVad(probabilities))
    start, end = stream(segmenter, samples)
    assert (start.kind, end.kind) == ("speech.start", "speech.end")
    # Onset at frame 10 (0.32 s), unpadded; confirmed once 150 ms long (end of frame 14).
    assert start.t_start == start.t_end == pytest.approx(0.32)
    assert start.emitted_at == pytest.approx(15 * FRAME_S)
    assert start.samples is None and start.samples_start is None
    # Model silence from frame 20 (0.64 s); 128 ms of it ends the segment after frame 23.
    assert end.t_start == pytest.approx(0.32)
    assert end.t_end == pytest.approx(0.64)
    assert end.emitted_at == pytest.approx(24 * FRAME_S)
    # The audio is padded by speech_pad_ms on both sides.
    assert end.samples_start == pytest.approx(0.29)
    np.testing.assert_array_equal(end.samples, samples[round(0.29 * RATE) : round(0.67 * RATE)])
    assert end.duration_s == pytest.approx(0.32)


def test_short_blips_give_no_event_and_hysteresis_holds_a_segment():
    blip = [0.0] * 5 + [0.9] * 3 + [0.0] * 10  # 96 ms < min_speech_ms
    assert stream(VadSegmenter(vad=ScriptedVad(blip)), np.zeros(20 * 512, np.float32)) == []
    # Probabilities between neg_threshold and threshold neither end nor restart a segment.
    # (Digital silence: the energy never rises, so the model alone decides.)
    held = [0.9] * 10 + [0.47] * 20 + [0.9] * 5 + [0.0] * 6
    events = stream(VadSegmenter(vad=ScriptedVad(held)), np.zeros(41 * 512, np.float32))
    assert kinds(events) == ["speech.start", "speech.end"]
    assert events[1].t_end == pytest.approx(35 * FRAME_S)
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


def test_energy_places_the_boundaries_off_the_frame_grid():
    # Speech (a burst 60 dB over the noise) from 1.013 s to 1.777 s; the model triggers
    # 43 ms late and its probability lags the end by 300 ms.
    total_s, speech = 3.0, (1.013, 1.777)
    samples = bursts([speech], total_s)
    probabilities = scripted([(1.05, speech[1] + 0.3)], total_s)
    segmenter = VadSegmenter(vad=ScriptedVad(probabilities))
    events = stream(segmenter, samples, chunk_samples=700)
    # One segment: after the energy ended it, the lagging probability starts no other.
    assert kinds(events) == ["speech.start", "speech.end"]
    start, end = events
    assert start.t_start == end.t_start == pytest.approx(speech[0], abs=0.008)
    # The burst is far above the noise, so no buried speech is added to the end.
    assert end.t_end == pytest.approx(speech[1], abs=0.008)
    # The energy's quiet (176 ms) ended it long before the model would have.
    assert 0.176 <= end.emitted_at - speech[1] <= 0.25
    assert end.samples_start == pytest.approx(end.t_start - 0.03, abs=1e-9)
    first = round(end.samples_start * RATE)
    np.testing.assert_array_equal(end.samples, samples[first : first + len(end.samples)])
    assert len(end.samples) == pytest.approx((end.t_end + 0.03 - end.samples_start) * RATE, abs=1)
    # The model alone: boundaries on its frame grid, the end after its lag.
    model = stream(VadSegmenter(VadOptions(energy=False), ScriptedVad(probabilities)), samples)
    assert model[1].t_start == pytest.approx(32 * FRAME_S)
    assert model[1].t_end == pytest.approx(np.ceil((speech[1] + 0.3) / FRAME_S) * FRAME_S)


def test_buried_speech_is_added_to_the_end_in_noise():
    total_s, speech = 3.0, (1.013, 1.777)
    probabilities = scripted([(1.05, speech[1] + 0.1)], total_s)
    ends = {}
    for burst_rms in (0.1, 0.01, 0.003):  # 60, 40 and 30 dB over the noise
        samples = bursts([speech], total_s, burst_rms=burst_rms)
        for tail in (0.0, 2.5):
            options = VadOptions(tail_ms_per_db=tail)
            events = stream(VadSegmenter(options, ScriptedVad(probabilities)), samples)
            assert kinds(events) == ["speech.start", "speech.end"]
            ends[burst_rms, tail] = events[1].t_end - speech[1]
    for burst_rms in (0.1, 0.01, 0.003):
        assert abs(ends[burst_rms, 0.0]) <= 0.008
    # Nothing is added 60 dB over the noise; more the nearer the speech is to the noise.
    assert ends[0.1, 2.5] == pytest.approx(ends[0.1, 0.0])
    assert 0.02 <= ends[0.01, 2.5] - ends[0.01, 0.0] < ends[0.003, 2.5] - ends[0.003, 0.0] <= 0.1


def test_pauses_inside_speech_do_not_split_it_and_real_pauses_do():
    total_s = 3.0
    # 150 ms of quiet inside speech while the model still says speech: one segment.
    samples = bursts([(1.0, 1.4), (1.55, 2.0)], total_s)
    events = stream(VadSegmenter(vad=ScriptedVad(scripted([(1.0, 2.1)], total_s))), samples)
    assert kinds(events) == ["speech.start", "speech.end"]
    assert events[1].t_end == pytest.approx(2.0, abs=0.008)
    # 300 ms that the model calls silence but the energy shows (a fricative): one segment.
    samples = bursts([(1.0, 2.0)], total_s)
    probabilities = scripted([(1.0, 1.3), (1.6, 2.1)], total_s)
    events = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples)
    assert kinds(events) == ["speech.start", "speech.end"]
    # Half a second of quiet that the model agrees with: two segments.
    samples = bursts([(1.0, 1.4), (1.9, 2.3)], total_s)
    probabilities = scripted([(1.0, 1.5), (1.9, 2.4)], total_s)
    events = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples)
    assert kinds(events) == ["speech.start", "speech.end"] * 2
    assert [events[1].t_end, events[3].t_start] == pytest.approx([1.4, 1.9], abs=0.008)


def test_without_a_noise_floor_the_model_places_the_boundaries():
    # Speech 50 ms into the stream: too little audio before it to know the noise floor.
    total_s = 1.5
    samples = bursts([(0.05, 0.8)], total_s)
    segmenter = VadSegmenter(vad=ScriptedVad(scripted([(0.05, 0.9)], total_s)))
    events = stream(segmenter, samples)
    assert kinds(events) == ["speech.start", "speech.end"]
    assert events[1].t_start == pytest.approx(1 * FRAME_S)
    assert events[1].t_end == pytest.approx(29 * FRAME_S)
    # A second utterance in the same stream has a floor by then.
    samples = bursts([(0.05, 0.8), (1.513, 2.2)], 3.0)
    probabilities = scripted([(0.05, 0.9), (1.55, 2.3)], 3.0)
    segmenter = VadSegmenter(vad=ScriptedVad(probabilities))
    events = []
    for first in range(0, len(samples), FRAME_SAMPLES):
        chunk = AudioChunk(samples[first : first + FRAME_SAMPLES], RATE, first * 62_500)
        events += segmenter.feed(chunk)
        if first == 40 * FRAME_SAMPLES:
            assert segmenter.noise_floor_db == pytest.approx(-80, abs=1)
    events += segmenter.flush()
    assert kinds(events) == ["speech.start", "speech.end"] * 2
    assert events[3].t_start == pytest.approx(1.513, abs=0.008)
    assert events[3].t_end == pytest.approx(2.2, abs=0.008)
    assert segmenter.noise_floor_db is None  # flush reset the stream


def test_chunk_sizes_int16_and_time_offsets_do_not_change_the_segments():
    total_s = 3.0
    samples = bursts([(1.013, 1.777)], total_s, noise_rms=3e-3, burst_rms=0.1)
    probabilities = scripted([(1.05, 2.0)], total_s)
    reference = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples)
    odd = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples, chunk_samples=700)
    pcm = np.round(samples * 32767).astype(np.int16)
    as_int16 = stream(VadSegmenter(vad=ScriptedVad(probabilities)), pcm)
    later = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples, start_ns=5 * 10**9)
    expected = [value for e in reference for value in (e.t_start, e.t_end, e.emitted_at)]
    assert kinds(reference) == ["speech.start", "speech.end"]
    for events in (odd, as_int16, later):
        assert kinds(events) == kinds(reference)
    times = [value for e in odd for value in (e.t_start, e.t_end, e.emitted_at)]
    assert times == pytest.approx(expected, abs=1e-9)
    times = [value for e in as_int16 for value in (e.t_start, e.t_end, e.emitted_at)]
    assert times == pytest.approx(expected, abs=0.008)
    times = [value - 5 for e in later for value in (e.t_start, e.t_end, e.emitted_at)]
    assert times == pytest.approx(expected, abs=1e-6)


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
        ("energy", 1),
        ("energy_margin_db", -1.0),
        ("quiet_ms", -1),
        ("confirm_quiet_ms", float("inf")),
        ("max_refine_ms", -5),
        ("tail_db", float("nan")),
        ("tail_ms_per_db", -0.5),
        ("dynamic_range_db", -3.0),
        ("echo_rho", 1.0),
        ("echo_rho", -0.1),
        ("echo_db", -1.0),
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

# Multi-word commands with pauses inside, several voices (en+f4 and en-us+f3 with an echo).
# Over 120 phrases per condition (benchmarks/vad_bounds.py --clips 20 --seeds 0,1,2,3,4,5)
# every start and end is within 100 ms of the true one, clean and at 20 and 10 dB SNR.
CLIPS = [
    ("turn on the kitchen light", "en-us", 160),
    ("what time is it", "en-gb-scotland+m5", 160),
    ("open the door", "en+f4", 130),
    ("next song", "en-gb-scotland+m5", 130),
    ("set a timer for five minutes", "en-us+m3", 160),
    ("play music", "en-us+f3", 190),
    ("lights off", "en-gb-scotland", 130),
    ("stop", "en-us", 160),
    ("turn on the light", "en+f4", 160),
    ("volume up", "en-us+m3", 130),
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
def test_one_segment_per_command_within_100_ms_of_the_true_bounds(silero, spoken, snr_db):
    segmenter = VadSegmenter(vad=silero)
    errors = []
    for text, _, _ in CLIPS:
        clip = spoken[(text, snr_db)]
        events = stream(segmenter, clip.samples)
        # Never split: pauses between words and weak consonants stay inside the segment.
        assert kinds(events) == ["speech.start", "speech.end"], (text, snr_db)
        start, end = events
        assert start.t_start == end.t_start
        latency = end.emitted_at - clip.t_end
        errors.append((text, end.t_start - clip.t_start, end.t_end - clip.t_end, latency))
        # The audio: padded by 30 ms, straight from the stream.
        assert end.samples_start == pytest.approx(end.t_start - 0.03)
        stop = min(end.t_end + 0.03, end.emitted_at)
        assert len(end.samples) == pytest.approx((stop - end.samples_start) * RATE, abs=1)
        first = round(end.samples_start * RATE)
        np.testing.assert_array_equal(end.samples, clip.samples[first : first + len(end.samples)])
    starts, ends, latencies = (np.array([row[i] for row in errors]) for i in (1, 2, 3))
    # Every start and end within 100 ms of the true one (clean: starts within 10 ms, and
    # ends within 50 ms for voices without an echo: a faint last consonant more than
    # dynamic_range_db below the loudest sound is left out).
    assert np.abs(starts).max() <= (0.01 if snr_db is None else 0.1), errors
    assert np.abs(ends).max() <= 0.1, errors
    if snr_db is None:
        plain = [
            end for (text, _, end, _), (_, voice, _) in zip(errors, CLIPS) if "+f" not in voice
        ]
        assert np.abs(plain).max() <= 0.05, errors
    # speech.end is out within 250 ms of the end of speech (audio time), leaving room for
    # the command decoder within 300 ms.
    assert latencies.max() <= 0.25, errors


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
    assert abs(ends[1].t_end - (offset + second.t_end)) <= 0.1
    assert ends[1].samples_start >= ends[0].t_end


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


def test_an_echo_after_the_last_word_does_not_extend_the_segment(silero, spoken):
    clip = spoken[("turn on the light", None)]  # en+f4: its echo rings ~130 ms past t_end
    ends = {}
    for dynamic_range_db in (35.0, 200.0):
        segmenter = VadSegmenter(VadOptions(dynamic_range_db=dynamic_range_db), vad=silero)
        (end,) = [e for e in stream(segmenter, clip.samples) if e.kind == "speech.end"]
        ends[dynamic_range_db] = end.t_end - clip.t_end
    assert abs(ends[35.0]) <= 0.06, ends
    assert ends[200.0] > 0.1, ends  # counting every sound above silence takes the echo in


def with_echo(clip, delay_s, gain, snr_db, seed):
    """The clip's clean speech with a delayed, fainter copy added, then white noise."""
    speech = clip.samples.astype(np.float64)
    shift = round(delay_s * RATE)
    echoed = speech.copy()
    echoed[shift:] += gain * speech[:-shift]
    said = speech[round(clip.t_start * RATE) : round(clip.t_end * RATE)]
    noise_rms = np.sqrt(np.mean(said**2) / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).standard_normal(len(echoed)) * noise_rms
    return (echoed + noise).astype(np.float32)


@pytest.mark.parametrize(
    ("text", "delay_s", "gain"),
    [
        ("what time is it", 0.2, 0.1),
        ("next song", 0.13, 0.15),
        ("turn on the kitchen light", 0.2, 0.1),
    ],
)
def test_a_discrete_echo_in_noise_is_not_taken_for_speech(silero, spoken, text, delay_s, gain):
    # A voice without an echo of its own, repeated later at 10-15% (-20 to -16 dB; the
    # echoes of espeak-ng's variants are 10/256 to 26/256), in white noise at 20 dB SNR:
    # the echo stands above the noise for up to the delay after the last word.
    clip = spoken[(text, None)]
    samples = with_echo(clip, delay_s, gain, 20.0, seed=3)
    results = {}
    for echo_rho in (0.5, 0.0):
        segmenter = VadSegmenter(VadOptions(echo_rho=echo_rho), vad=silero)
        events = stream(segmenter, samples)
        assert kinds(events) == ["speech.start", "speech.end"], (text, echo_rho)
        results[echo_rho] = (events[1].t_end - clip.t_end, events[1].emitted_at - clip.t_end)
    (end, latency), (end_off, latency_off) = results[0.5], results[0.0]
    assert abs(end) <= 0.1, results
    assert latency <= 0.3, results
    # Without the echo test the echo is taken for speech: the end comes late.
    assert end_off > end + 0.05, results
    assert latency_off >= latency, results


def test_the_echo_test_leaves_speech_without_an_echo_alone(silero, spoken):
    # On voices with no echo, the test finds none: the same segments with it off.
    for text, voice, _ in CLIPS:
        if "+f" in voice:
            continue
        for snr in (None, 10.0):
            clip = spoken[(text, snr)]
            found = [
                [
                    (e.kind, e.t_start, e.t_end, e.emitted_at)
                    for e in stream(
                        VadSegmenter(VadOptions(echo_rho=rho), vad=silero), clip.samples
                    )
                ]
                for rho in (0.5, 0.0)
            ]
            assert found[0] == found[1], (text, snr)


def test_noise_crossing_the_threshold_after_the_last_word_does_not_extend_it(monkeypatch):
    # Speech 30 dB over the noise, then, 120 ms after it, the noise itself swells (a Hann
    # bump in amplitude): for 40 ms, a few levels just over the loud threshold.
    import ubiq.pipelines.speech.vad_segment as vad_module

    total_s, speech = 3.0, (1.013, 1.777)
    probabilities = scripted([(1.05, speech[1] + 0.1)], total_s)

    def end_after(swell, width_s=0.04):
        samples = bursts([speech], total_s, burst_rms=0.003)
        first, count = round(1.9 * RATE), round(width_s * RATE)
        samples[first : first + count] *= (1 + swell * np.hanning(count)).astype(np.float32)
        events = stream(VadSegmenter(vad=ScriptedVad(probabilities)), samples)
        assert kinds(events) == ["speech.start", "speech.end"]
        return events[1].t_end - speech[1]

    quiet = end_after(0.0)
    assert 0.0 <= quiet <= 0.08  # the buried-speech allowance at 30 dB
    assert end_after(0.3) == pytest.approx(quiet)  # a faint, short swell is noise
    assert end_after(0.3, width_s=0.12) > 0.15  # a longer one is sound: the end moves to it
    # Counting every run of 2 loud levels, the faint swell would have moved the end too.
    monkeypatch.setattr(vad_module, "_BLIP_RUN", 2)
    monkeypatch.setattr(vad_module, "_BLIP_DB", 0.0)
    assert end_after(0.3) > 0.15
