"""A command model's threshold is chosen by training: the rule, its table, its fallback."""

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


def test_the_lowest_threshold_that_keeps_negatives_out_on_average_wins():
    # 20 negatives (label 1) and 4 commands; in noise, 9 negatives pass as "lights on"
    # with 0.62 (5), 0.64 (2) and 0.71 (2), none clean: on average over the two
    # conditions at most 10% may pass: 0.6 lets 9/20 / 2 = 22.5% through, 0.65 lets
    # 2/20 / 2 = 5%, so 0.65
    labels = np.array([1] * 20 + [2, 2, 3, 3])
    clean = _probs([1] * 20 + [2, 2, 3, 3], [0.9] * 20 + [0.95, 0.6, 0.9, 0.8])
    noisy_top = [2] * 9 + [1] * 11 + [2, 3, 3, 1]
    scores = [0.62] * 5 + [0.64] * 2 + [0.71] * 2 + [0.8] * 11 + [0.9, 0.66, 0.5, 0.9]
    chosen = choose_threshold({"clean": clean, "10 dB": _probs(noisy_top, scores)}, labels, NAMES)
    assert chosen["threshold"] == 0.65
    assert chosen["threshold_chosen"].startswith(THRESHOLD_RULE)
    rows = {row[0]: row for row in chosen["calibration"]["10 dB"]}
    assert rows[0.6][2] == 0.45 and rows[0.65][2] == 0.1 and rows[0.75][2] == 0.0
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


def test_with_the_phone_check_the_pair_accepting_most_commands_wins():
    from ubiq.models.toolchain.train.kws_calibrate import VERIFY_GRID, VERIFY_RULE

    # 20 negatives and 4 commands, every one top-scored 0.9 as a phrase by the model (the
    # negatives are near misses it takes for "lights on"): no model threshold keeps them
    # out, but their phone scores are 0.03, the commands' 0.5 (one command 0.09)
    labels = np.array([1] * 20 + [2, 2, 3, 3])
    probs = _probs([2] * 20 + [2, 2, 3, 3], [0.9] * 24)
    phones = np.zeros((24, len(NAMES)))
    phones[:20, 2] = 0.03
    phones[20:, 2], phones[20:, 3] = 0.5, 0.5
    phones[23, 3] = 0.09
    chosen = choose_threshold({"clean": probs}, labels, NAMES, {"clean": phones})
    # phone 0.04 keeps every negative out and every command in; 0.1 would lose one
    assert chosen["verify_threshold"] == 0.04 and 0.04 in VERIFY_GRID
    assert chosen["threshold"] == THRESHOLD_GRID[0]  # the lowest model threshold of equals
    assert chosen["threshold_chosen"].startswith(VERIFY_RULE)
    rows = {row[0]: row for row in chosen["calibration"]["clean"]}
    assert rows[0.3][1:] == [1.0, 0.0]
    # without the phone check only a threshold above every score keeps the negatives out,
    # and it refuses every command too
    plain = choose_threshold({"clean": probs}, labels, NAMES)
    assert "verify_threshold" not in plain and plain["threshold"] == 0.95
    assert plain["calibration"]["clean"][-1][1:] == [0.0, 0.0]
