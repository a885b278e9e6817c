"""The acceptance threshold of a command model, chosen by training instead of a fixed 0.6.

After the last epoch, the best weights score every validation clip (voices the model never
trained on) clean and with white noise at 20 and 10 dB SNR (the noise power relative to the
speech, not to the clip's padding). A clip is *accepted* at threshold ``t`` when its top
class is a phrase (not ``_unknown_`` or ``_silence_``) with probability ``>= t``. The
``_unknown_`` clips are the negatives: everyday sentences, parts of commands, one-word
swaps (for everyday words and for words that sound alike) and shuffled command words, all
generated from the command list itself
(:func:`~ubiq.models.datasets.command_training.unknown_phrases`).

:data:`THRESHOLD_RULE`: the lowest threshold of :data:`THRESHOLD_GRID` at which at most
:data:`MAX_FALSE_ACCEPT` of the negatives are accepted on average over the conditions; the
lowest, because every step up costs commands. The negatives are mostly near misses (up to
four fifths are parts, swaps, sound-alikes and shuffles of the commands), so the limit is
the speech bar for near misses, 10%. When no threshold meets it, the one with the fewest
negatives accepted on average (the rule text then says so). The threshold, the rule and the
table it was chosen from go into the checkpoint's config and from there into the exported
model's manifest, where :class:`~ubiq.pipelines.speech.recognize.ModelCommandRecognizer`
reads them.

**The phone check** (a second stage, where espeak-ng and the shipped phone model are
there): a classifier knows only its own phrases, so a phrase one word from a command ("open
the garden") is often taken for it. The phone recogniser scores how well the audio fits the
accepted phrase's spelling (:class:`~ubiq.pipelines.speech.phone_commands.
PhoneCommandRecognizer`); a command then needs both the model's probability and that score.
:data:`VERIFY_RULE` chooses the two thresholds together on the same validation clips; the
phone threshold goes into the manifest as ``verify_threshold``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "CALIBRATION_SNRS",
    "MAX_FALSE_ACCEPT",
    "MAX_FALSE_ACCEPT_VERIFIED",
    "THRESHOLD_GRID",
    "THRESHOLD_RULE",
    "VERIFY_GRID",
    "VERIFY_RULE",
    "calibrate_threshold",
    "choose_threshold",
    "with_white_noise",
]

THRESHOLD_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 ... 0.95
CALIBRATION_SNRS: tuple[float | None, ...] = (None, 20.0, 10.0)
MAX_FALSE_ACCEPT = 0.10
THRESHOLD_RULE = (
    "lowest of 0.30-0.95 (steps of 0.05) with at most 10% of the validation voices' "
    "_unknown_ clips (sentences, command parts, word swaps, sound-alikes, shuffles) "
    "accepted as a command, on average over clean and white noise at 20 and 10 dB SNR"
)
VERIFY_GRID = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)
"""Phone thresholds tried with the phone check (0: the check passes everything)."""
MAX_FALSE_ACCEPT_VERIFIED = 0.05
VERIFY_RULE = (
    "pair of threshold (0.30-0.95) and phone threshold (0-0.20) that accepts the most "
    "validation commands on average over clean and white noise at 20 and 10 dB SNR with at "
    "most 5% of the validation voices' _unknown_ clips (sentences, command parts, word "
    "swaps, sound-alikes, shuffles) accepted, the lowest pair on ties"
)
SPECIAL = ("_unknown_", "_silence_")


def with_white_noise(
    samples: np.ndarray, snr_db: float | None, rng: np.random.Generator
) -> np.ndarray:
    """``(N, L)`` clips with white noise at ``snr_db`` relative to each clip's speech.

    The speech is the span between the first and last sample louder than -80 dBFS (the
    clips are trimmed speech centred in zeros), so the padding does not lower the SNR.
    ``None`` returns the clips unchanged.
    """
    if snr_db is None:
        return samples
    out = samples.astype(np.float32, copy=True)
    for row, clip in enumerate(samples):
        loud = np.flatnonzero(np.abs(clip) > 1e-4)
        if len(loud) == 0:
            continue
        speech = clip[loud[0] : loud[-1] + 1].astype(np.float64)
        noise_rms = np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
        out[row] += rng.standard_normal(len(clip)).astype(np.float32) * np.float32(noise_rms)
    return np.clip(out, -1.0, 1.0)


def choose_threshold(
    probabilities: dict[str, np.ndarray],
    labels: np.ndarray,
    names: Sequence[str],
    phone_scores: dict[str, np.ndarray] | None = None,
) -> dict:
    """Applies :data:`THRESHOLD_RULE` to softmax outputs, or :data:`VERIFY_RULE` when
    ``phone_scores`` are given.

    Args:
        probabilities: Condition name (``"clean"``, ``"20 dB"``, ...) -> ``(N, C)``
            probabilities of the same ``N`` clips.
        labels: ``(N,)`` true class indices into ``names``.
        names: The model's classes, with ``_unknown_`` among them.
        phone_scores: Condition -> ``(N, C)`` phone-check scores (0 to 1) of each clip for
            each class's phrase (anything for ``_unknown_`` and ``_silence_``).

    Returns:
        ``{"threshold", "threshold_chosen", "calibration"}`` and, with ``phone_scores``,
        ``"verify_threshold"``; ``calibration`` maps each condition to rows ``[t, commands
        right and accepted, negatives accepted]`` (fractions) for every threshold of the
        grid (at the chosen phone threshold).

    Raises:
        ValueError: If ``names`` has no ``_unknown_`` or the validation set has no
            ``_unknown_`` or no phrase clip.
    """
    names = list(names)
    if "_unknown_" not in names:
        raise ValueError("a command model needs an _unknown_ class to choose a threshold")
    phrase = np.array([n not in SPECIAL for n in names])
    negatives = labels == names.index("_unknown_")
    commands = phrase[labels]
    if not negatives.any() or not commands.any():
        raise ValueError("the validation set needs _unknown_ clips and phrase clips")
    verify_grid = VERIFY_GRID if phone_scores is not None else (0.0,)
    right = np.zeros((len(verify_grid), len(THRESHOLD_GRID)))
    false = np.zeros_like(right)
    tables: list[dict[str, list[list[float]]]] = [{} for _ in verify_grid]
    for condition, probs in probabilities.items():
        top = probs.argmax(axis=1)
        score = probs[np.arange(len(probs)), top]
        checked = None
        if phone_scores is not None:
            checked = phone_scores[condition][np.arange(len(probs)), top]
        for j, v in enumerate(verify_grid):
            passes = phrase[top] if checked is None else phrase[top] & (checked >= v)
            rows = []
            for k, t in enumerate(THRESHOLD_GRID):
                accepted = passes & (score >= t)
                good = float(np.mean(accepted[commands] & (top[commands] == labels[commands])))
                bad = float(np.mean(accepted[negatives]))
                right[j, k] += good / len(probabilities)
                false[j, k] += bad / len(probabilities)
                rows.append([t, round(good, 4), round(bad, 4)])
            tables[j][condition] = rows
    limit = MAX_FALSE_ACCEPT if phone_scores is None else MAX_FALSE_ACCEPT_VERIFIED
    base = THRESHOLD_RULE if phone_scores is None else VERIFY_RULE
    met = false <= limit + 1e-12
    if met.any():
        if phone_scores is None:
            j, index = 0, int(np.flatnonzero(met[0])[0])  # the lowest threshold meeting it
        else:  # the most commands; np.argmax takes the first, the lowest pair, on ties
            j, index = np.unravel_index(int(np.argmax(np.where(met, right, -1.0))), met.shape)
        rule = base
    else:
        j, index = np.unravel_index(int(np.argmin(false)), false.shape)  # the lowest of equals
        rule = (
            f"{base}; no threshold met it, so the one with the fewest accepted on "
            f"average ({false[j, index]:.1%})"
        )
    j, index = int(j), int(index)
    threshold = THRESHOLD_GRID[index]
    table = tables[j]
    summary = ", ".join(
        f"{condition}: {rows[index][1]:.1%} commands, {rows[index][2]:.1%} negatives"
        for condition, rows in table.items()
    )
    at = f"{threshold:.2f}" + ("" if phone_scores is None else f", phone {verify_grid[j]:.2f}")
    chosen = {
        "threshold": float(threshold),
        "threshold_chosen": f"{rule} ({summary} at {at})",
        "calibration": table,
    }
    if phone_scores is not None:
        chosen["verify_threshold"] = float(verify_grid[j])
    return chosen


def calibrate_threshold(
    samples: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int = 0,
    verify: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Scores ``samples`` in every condition of :data:`CALIBRATION_SNRS` with ``predict``
    (``(N, L)`` waveforms -> ``(N, C)`` probabilities) and, when given, ``verify`` (the
    phone check: ``(N, L)`` waveforms -> ``(N, C)`` scores of each class's phrase), and
    applies :func:`choose_threshold`.
    """
    rng = np.random.default_rng(seed)
    probabilities, phone_scores = {}, {}
    for snr in CALIBRATION_SNRS:
        condition = "clean" if snr is None else f"{snr:g} dB"
        noisy = with_white_noise(samples, snr, rng)
        probabilities[condition] = predict(noisy)
        if verify is not None:
            phone_scores[condition] = verify(noisy)
    return choose_threshold(
        probabilities, labels, names, phone_scores if verify is not None else None
    )
