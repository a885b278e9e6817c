"""A command model's threshold is chosen by training (rule, table, manifest), and the
training augmentation's room reverberation and speech-relative noise do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from ubiq.models.toolchain.train.kws_calibrate import (
    MAX_FALSE_ACCEPT,
    THRESHOLD_GRID,
    THRESHOLD_RULE,
    choose_threshold,
    with_white_noise,
)

pytest.importorskip("torch")

NAMES = ["_silence_", "_unknown_", "lights on", "what time is it"]


def _probs(top: list[int], score: list[float]) -> np.ndarray:
    """Rows whose top class is ``top`` with probability ``score``, the rest spread evenly."""
    out = np.zeros((len(top), len(NAMES)))
    for row, (k, p) in enumerate(zip(top, score)):
        out[row] = (1 - p) / (len(NAMES) - 1)
        out[row, k] = p
    return out


def test_the_lowest_threshold_that_keeps_negatives_out_in_every_condition_wins():
    # 100 negatives (label 1) and 4 commands; in noise, 3 negatives pass as "lights on"
    # with 0.62, 0.64 and 0.71: at most 2 of 100 may pass, so 0.65 (one left, at 0.71)
    labels = np.array([1] * 100 + [2, 2, 3, 3])
    clean = _probs([1] * 100 + [2, 2, 3, 3], [0.9] * 100 + [0.95, 0.6, 0.9, 0.8])
    noisy_top = [2, 2, 2] + [1] * 97 + [2, 3, 3, 1]
    noisy = _probs(noisy_top, [0.62, 0.64, 0.71] + [0.8] * 97 + [0.9, 0.66, 0.5, 0.9])
    chosen = choose_threshold({"clean": clean, "10 dB": noisy}, labels, NAMES)
    assert chosen["threshold"] == 0.65
    assert chosen["threshold_chosen"].startswith(THRESHOLD_RULE)
    rows = {row[0]: row for row in chosen["calibration"]["10 dB"]}
    assert rows[0.6][2] == 0.03 and rows[0.65][2] == 0.01 and rows[0.75][2] == 0.0
    # commands right and accepted at 0.65 in noise: only the first "lights on" (0.9); the
    # second was heard as "what time is it", the next is below (0.5), the last _unknown_
    assert rows[0.65][1] == 0.25 and rows[0.3][1] == 0.5
    assert {row[0] for row in chosen["calibration"]["clean"]} == set(THRESHOLD_GRID)


def test_no_threshold_meets_the_rule_the_fewest_accepted_wins_and_the_rule_says_so():
    labels = np.array([1] * 10 + [2])
    probs = _probs([2] * 10 + [2], [0.97] * 5 + [0.5] * 5 + [0.99])  # 5 of 10 at 0.97
    chosen = choose_threshold({"clean": probs}, labels, NAMES)
    assert chosen["threshold"] == 0.5 + 0.05 * 1  # 0.55 is the first with only 5 left
    assert "no threshold met it" in chosen["threshold_chosen"]
    assert MAX_FALSE_ACCEPT < 0.5


def test_a_model_without_unknown_or_negatives_gets_no_threshold():
    with pytest.raises(ValueError, match="_unknown_"):
        choose_threshold({"clean": np.eye(2)}, np.array([0, 1]), ["yes", "no"])
    with pytest.raises(ValueError, match="needs _unknown_ clips"):
        choose_threshold({"clean": _probs([2], [0.9])}, np.array([2]), NAMES)


def test_noise_is_relative_to_the_speech_not_to_the_padding():
    rng = np.random.default_rng(0)
    clip = np.zeros((1, 32000), np.float32)
    clip[0, 12000:20000] = 0.3 * np.sin(np.arange(8000) * 0.05)  # speech is a quarter
    noisy = with_white_noise(clip, 10.0, rng)
    noise = noisy - clip
    snr = 10 * np.log10(np.mean(clip[0, 12000:20000] ** 2) / np.mean(noise**2))
    assert abs(snr - 10.0) < 0.3
    assert with_white_noise(clip, None, rng) is clip


def test_room_response_decays_60_db_in_its_reverberation_time():
    from ubiq.models.toolchain.train.kws import RT60_S, reverberate, room_response

    rng = np.random.default_rng(3)
    for _ in range(5):
        response = room_response(rng, 16000)
        rt60 = len(response) / 16000
        assert RT60_S[0] <= rt60 <= RT60_S[1] and response[0] == 1.0
        # energy in the first and last tenth of the tail: about 60 dB * 0.8 apart
        tail = response[len(response) // 20 :] ** 2
        tenth = len(tail) // 10
        drop = 10 * np.log10(tail[:tenth].mean() / tail[-tenth:].mean())
        assert 35 < drop < 60, drop
    clip = np.zeros(32000, np.float32)
    clip[8000:16000] = 0.2 * np.sign(np.sin(np.arange(8000) * 0.03))
    wet = reverberate(clip, room_response(np.random.default_rng(1), 16000))
    assert wet.shape == clip.shape and wet.dtype == np.float32
    assert np.abs(wet[16500:20000]).max() > 0.01  # rings on after the speech
    loud = np.flatnonzero(np.abs(wet) > 1e-4)
    rms = np.sqrt(np.mean(wet[loud[0] : loud[-1] + 1] ** 2))
    assert rms == pytest.approx(0.2 * np.sqrt(8000 / (loud[-1] + 1 - loud[0])) * 1, rel=0.5)


def test_sound_alike_swaps_are_one_phone_away_and_never_homophones():
    pytest.importorskip("pocketsphinx")
    from ubiq.models.datasets.command_training import _pronunciations, sound_alikes

    dictionary = _pronunciations()
    alike = sound_alikes(["light", "kitchen", "zzzqx"], 3, np.random.default_rng(0))
    assert set(alike) == {"light", "kitchen"}  # a word outside the dictionary gets none
    for word, others in alike.items():
        assert len(others) == 3
        for other in others:
            a, b = dictionary[word], dictionary[other]
            assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1, (word, other)
