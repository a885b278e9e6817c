"""Phone spelling and CTC scoring behind the zero-wait command path."""

from __future__ import annotations

import numpy as np
import pytest

from ubiq.errors import ConfigError
from ubiq.pipelines.speech.phone_commands import near_miss_texts
from ubiq.pipelines.speech.phones import (
    PHONES,
    best_path_log_likelihood,
    ctc_log_likelihood,
    normalize_features,
    phone_ids,
    phrase_phones,
    to_phones,
)


def test_ctc_likelihood_matches_torch_for_several_sequences_at_once():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(30, len(PHONES) + 1)) * 2
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    sequences = [np.array([5, 5, 7]), np.array([1]), np.array([3, 9, 3, 9, 12, 12, 4]),
                 np.array(list(range(1, 15)))]  # fmt: skip
    ours = ctc_log_likelihood(log_probs, sequences)
    for value, sequence in zip(ours, sequences):
        expected = -torch.nn.functional.ctc_loss(
            torch.from_numpy(log_probs)[:, None],
            torch.from_numpy(sequence)[None],
            torch.tensor([30]),
            torch.tensor([len(sequence)]),
            reduction="sum",
        ).item()
        assert value == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_ctc_likelihood_is_minus_infinity_when_the_frames_are_too_few():
    log_probs = np.log(np.full((3, 5), 0.2))
    # "1 1" needs a blank between the repeats: 3 frames; "1 1 1" needs 5
    assert np.isfinite(ctc_log_likelihood(log_probs, [np.array([1, 1])]))[0]
    assert ctc_log_likelihood(log_probs, [np.array([1, 1, 1])])[0] == -np.inf


def test_the_best_path_bounds_every_single_path():
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(6), size=12))
    best = best_path_log_likelihood(log_probs)
    path = log_probs.argmax(axis=1)
    assert best == pytest.approx(float(log_probs[np.arange(12), path].sum()))
    assert ctc_log_likelihood(log_probs, [np.array([2, 3])])[0] < best + np.log(12 * 12)


def test_espeak_mnemonics_become_arpabet_leniently():
    assert to_phones("t'3:n 0nD@ k'ItS@n l'aIt") == [
        "T",
        "ER",
        "N",
        "AA",
        "N",
        "DH",
        "AH",
        "K",
        "IH",
        "CH",
        "AH",
        "N",
        "L",
        "AY",
        "T",
    ]
    assert to_phones("t'VRn") == ["T", "AH", "R", "N"]  # Scottish R
    assert to_phones("a[b") == ["AE", "B"]  # a mark with no phone is skipped
    assert phone_ids(["AA", "ZH"]).tolist() == [1, len(PHONES)]
    with pytest.raises(ConfigError, match="XX"):
        phone_ids(["AA", "XX"])


def test_any_word_is_spelled_including_names():
    assert phrase_phones("hey mycroft") == tuple(["HH", "EY", "M", "IH", "K", "R", "AO", "F", "T"])
    assert phrase_phones("hey mycroft", "en") == tuple(
        ["HH", "EY", "M", "IH", "K", "R", "AA", "F", "T"]
    )
    assert phrase_phones("zorblax")[0] == "Z"
    assert phrase_phones("turn on", "en") != () and phrase_phones("turn on", "en")[0] == "T"


def test_features_lose_the_level_of_the_microphone():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 50)).astype(np.float32)
    assert np.allclose(normalize_features(features + 7.0), normalize_features(features), atol=1e-5)


def test_near_misses_come_from_the_list_and_are_never_a_command():
    phrases = ["open the garage", "volume up", "good night", "lights"]
    texts = near_miss_texts(phrases, np.random.default_rng(0))
    assert texts and not set(texts) & set(phrases)
    words = {w for p in phrases for w in p.split()}
    # a near miss keeps a word of the list (a one-word command's swap is just another word)
    assert all(set(t.split()) & words or len(t.split()) == 1 for t in texts)
    assert any(sorted(t.split()) == sorted(["open", "the", "garage"]) for t in texts)  # shuffle
    assert "the garage" in texts or "open garage" in texts or "open the" in texts  # a word out
