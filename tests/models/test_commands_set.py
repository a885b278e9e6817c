"""Spoken-command clips: espeak-ng synthesis, exact speech bounds, SNR, the indexed set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ubiq.errors import BackendUnavailable, ConfigError, DatasetError
from ubiq.models.datasets.commands import (
    SPEECH_AMPLITUDE,
    SPEECH_PEAK,
    load_command_set,
    make_clip,
    make_command_set,
    speech_bounds,
    synthesize,
)
from ubiq.models.runtime.audio_features import read_wav

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)"
)
RATE = 16000


def _snr_db(clean, noisy, t_start, t_end):
    speech = clean[round(t_start * RATE) : round(t_end * RATE)].astype(np.float64)
    noise = (noisy - clean).astype(np.float64)
    return 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))


def test_speech_bounds_of_a_known_burst():
    samples = np.zeros(RATE, np.float32)
    samples[1600:8000] = 0.5 * np.cos(2 * np.pi * 440 * np.arange(6400) / RATE)
    samples[1600:8000][np.abs(samples[1600:8000]) < 2e-3] = 0.01  # no silent zero crossings
    start_s, end_s = speech_bounds(samples, RATE)
    assert (start_s, end_s) == (0.1, 0.5)
    with pytest.raises(ValueError, match="no speech"):
        speech_bounds(np.zeros(100, np.float32), RATE)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        speech_bounds(np.zeros((2, 100), np.float32), RATE)


@needs_espeak
def test_bounds_move_exactly_with_known_padding():
    speech = synthesize("turn on the light", "en-us", 160, 50)
    assert speech.dtype == np.float32 and len(speech) > RATE // 2
    start_s, end_s = speech_bounds(speech, RATE)
    # espeak-ng pads its output with silence (plus faint resampling ripple), which the
    # bounds exclude.
    assert 0.0 < start_s < 0.2 and end_s < len(speech) / RATE - 0.1
    assert np.abs(speech[: round(start_s * RATE)]).max() <= SPEECH_AMPLITUDE
    assert np.abs(speech[round(end_s * RATE) :]).max() <= SPEECH_AMPLITUDE
    assert abs(speech[round(start_s * RATE)]) > SPEECH_AMPLITUDE
    padded = np.concatenate([np.zeros(4321, np.float32), speech, np.zeros(999, np.float32)])
    shifted = speech_bounds(padded, RATE)
    assert shifted == pytest.approx((start_s + 4321 / RATE, end_s + 4321 / RATE), abs=1e-9)


@needs_espeak
def test_clean_clip_places_speech_at_known_times():
    clip = make_clip("stop", "en+f4", 160, 50, snr_db=None, lead_s=0.5, tail_s=0.3)
    assert clip.sample_rate == RATE and clip.samples.dtype == np.float32
    assert clip.t_start == 0.5
    start, audible_end = speech_bounds(clip.samples, RATE)
    assert start == pytest.approx(clip.t_start, abs=1e-9)
    # en+f4 has an echo (130 ms, 15/256): it rings on after the last phoneme, where t_end is
    assert 0.03 < audible_end - clip.t_end < 0.16
    assert clip.duration_s == pytest.approx(audible_end + 0.3)
    plain = make_clip("stop", "en-us", 160, 50, snr_db=None, lead_s=0.5, tail_s=0.3)
    plain_start, plain_end = speech_bounds(plain.samples, RATE)
    assert plain_start == pytest.approx(0.5) and -0.002 < plain_end - plain.t_end < 0.015
    assert float(np.abs(clip.samples).max()) == pytest.approx(SPEECH_PEAK, rel=1e-6)
    assert (clip.text, clip.voice, clip.speed, clip.pitch, clip.snr_db) == (
        "stop",
        "en+f4",
        160,
        50,
        None,
    )


@needs_espeak
@pytest.mark.parametrize("snr_db", [20.0, 10.0, 0.0])
def test_noise_has_the_asked_snr_over_the_speech_part(snr_db):
    clean = make_clip("what time is it", "en-us", 160, 50, snr_db=None)
    noisy = make_clip(
        "what time is it", "en-us", 160, 50, snr_db=snr_db, rng=np.random.default_rng(3)
    )
    assert (noisy.t_start, noisy.t_end) == (clean.t_start, clean.t_end)
    measured = _snr_db(clean.samples, noisy.samples, clean.t_start, clean.t_end)
    assert abs(measured - snr_db) < 0.5
    # The noise covers the whole clip, lead and tail included.
    lead = noisy.samples[: round(noisy.t_start * RATE)]
    assert np.sqrt(np.mean(lead**2)) > 0.1 * np.sqrt(np.mean((noisy.samples - clean.samples) ** 2))


@needs_espeak
def test_same_seed_gives_the_same_noise_and_bad_values_are_rejected():
    first = make_clip("stop", "en-us", 160, 50, snr_db=10, rng=np.random.default_rng(7))
    second = make_clip("stop", "en-us", 160, 50, snr_db=10, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first.samples, second.samples)
    with pytest.raises(ValueError, match="lead_s"):
        make_clip("stop", "en-us", 160, 50, snr_db=None, lead_s=-1)
    with pytest.raises(ValueError, match="noise"):
        make_clip("stop", "en-us", 160, 50, snr_db=10, noise="blue")
    with pytest.raises(ConfigError, match="speeds"):
        synthesize("stop", "en-us", 20, 50)
    with pytest.raises(ConfigError, match="text"):
        synthesize("  ", "en-us", 160, 50)


@needs_espeak
def test_command_set_writes_wavs_and_an_index(tmp_path):
    root = make_command_set(
        tmp_path / "set",
        commands=["lights on", "stop"],
        non_commands=["hello there"],
        voices=["en-us", "en+f4"],
        speeds=[170],
        snrs=(None, 10),
        seed=1,
        progress=False,
    )
    lines = (root / "index.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 2 * 1 * 1 * 2
    records = load_command_set(root)
    assert [json.loads(line)["file"] for line in lines] == [r["file"] for r in records]
    assert set(records[0]) == {
        "file",
        "text",
        "is_command",
        "voice",
        "speed",
        "pitch",
        "snr_db",
        "t_start",
        "t_end",
        "path",
    }
    assert sum(r["is_command"] for r in records) == 8
    assert {r["text"] for r in records if not r["is_command"]} == {"hello there"}
    assert {r["snr_db"] for r in records} == {None, 10.0}
    assert len({r["file"] for r in records}) == len(records)
    by_key = {(r["text"], r["voice"], r["snr_db"]): r for r in records}
    for record in records:
        samples, rate = read_wav(record["path"])
        assert rate == RATE
        assert record["t_start"] == pytest.approx(0.8)
        clean = read_wav(by_key[(record["text"], record["voice"], None)]["path"])[0]
        audible = speech_bounds(clean, RATE)  # of the written (16-bit) clean file
        assert len(samples) / RATE == pytest.approx(audible[1] + 0.8, abs=2e-3)
        # The index holds the true bounds: the first sound and the end of the last phoneme,
        # which is the last sound for a voice without an echo, and earlier for en+f4's.
        assert audible[0] == pytest.approx(record["t_start"], abs=2e-3)
        if record["voice"] == "en-us":  # the last phoneme fades within a few ms
            assert -0.002 < audible[1] - record["t_end"] < 0.015
        else:
            assert 0.01 < audible[1] - record["t_end"] < 0.16
        if record["snr_db"] is not None:
            measured = _snr_db(clean, samples, *audible)
            assert abs(measured - 10.0) < 0.5


@needs_espeak
def test_command_set_errors(tmp_path):
    with pytest.raises(ConfigError, match="non_commands must not repeat"):
        make_command_set(tmp_path / "a", ["stop"], ["Stop"], ["en-us"], [160], progress=False)
    with pytest.raises(ConfigError, match="snrs"):
        make_command_set(
            tmp_path / "b", ["stop"], [], ["en-us"], [160], snrs=(float("nan"),), progress=False
        )
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        make_command_set(tmp_path / "busy", ["stop"], [], ["en-us"], [160], progress=False)


def test_missing_espeak_is_a_backend_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendUnavailable, match="apt-get install espeak-ng"):
        make_command_set(tmp_path / "set", ["stop"], [], ["en-us"], [160], progress=False)
    with pytest.raises(BackendUnavailable, match="espeak-ng"):
        make_clip("stop", "en-us", 160, 50, snr_db=None)


def test_load_command_set_errors(tmp_path):
    with pytest.raises(DatasetError, match="index.jsonl not found"):
        load_command_set(tmp_path)
    (tmp_path / "index.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="line 1 is not JSON"):
        load_command_set(tmp_path)
    (tmp_path / "index.jsonl").write_text(json.dumps({"file": "a.wav", "text": "stop"}) + "\n")
    with pytest.raises(DatasetError, match="lacks is_command"):
        load_command_set(tmp_path)
    record = dict.fromkeys(
        ["text", "is_command", "voice", "speed", "pitch", "snr_db", "t_start", "t_end"], 0
    )
    (tmp_path / "index.jsonl").write_text(json.dumps({"file": "gone.wav", **record}) + "\n")
    with pytest.raises(DatasetError, match="missing file"):
        load_command_set(tmp_path)
