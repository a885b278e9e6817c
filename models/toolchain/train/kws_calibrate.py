"""The acceptance threshold of a command model, chosen by training instead of a fixed 0.6.

After the last epoch, the best weights score every validation clip (voices the model never
trained on) clean and with white noise at 20 and 10 dB SNR (the noise power relative to the
speech, not to the clip's padding). A clip is *accepted* at threshold ``t`` when its top
class is a phrase (not ``_unknown_`` or ``_silence_``) with probability ``>= t``. The
``_unknown_`` clips are the negatives: everyday sentences, parts of commands, one-word
swaps and shuffled command words, all generated from
the command list itself (:func:`~ubiq.models.datasets.command_training.unknown_phrases`).

:data:`THRESHOLD_RULE`: the lowest threshold of :data:`THRESHOLD_GRID` at which at most
:data:`MAX_FALSE_ACCEPT` of the negatives are accepted on average over the conditions; the
lowest, because every step up costs commands. The negatives are mostly near misses (three
quarters are parts, swaps and shuffles of the commands), so the limit is the speech bar
for near misses, 10%. When no threshold meets it, the one with the fewest negatives
accepted on average (the rule text then says so). The threshold, the rule and the table it
was chosen from go into the checkpoint's config and from there into the exported model's
manifest, where :class:`~ubiq.pipelines.speech.recognize.ModelCommandRecognizer` reads
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "CALIBRATION_SNRS",
    "MAX_FALSE_ACCEPT",
    "THRESHOLD_GRID",
    "THRESHOLD_RULE",
    "calibrate_threshold",
    "choose_threshold",
    "with_white_noise",
]

THRESHOLD_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 ... 0.95
CALIBRATION_SNRS: tuple[float | None, ...] = (None, 20.0, 10.0)
MAX_FALSE_ACCEPT = 0.10
THRESHOLD_RULE = (
    "lowest of 0.30-0.95 (steps of 0.05) with at most 10% of the validation voices' "
    "_unknown_ clips (sentences, command parts, word swaps, shuffles) accepted as a "
    "command, on average over clean and white noise at 20 and 10 dB SNR"
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
    probabilities: dict[str, np.ndarray], labels: np.ndarray, names: Sequence[str]
) -> dict:
    """Applies :data:`THRESHOLD_RULE` to softmax outputs.

    Args:
        probabilities: Condition name (``"clean"``, ``"20 dB"``, ...) -> ``(N, C)``
            probabilities of the same ``N`` clips.
        labels: ``(N,)`` true class indices into ``names``.
        names: The model's classes, with ``_unknown_`` among them.

    Returns:
        ``{"threshold", "threshold_chosen", "calibration"}``; ``calibration`` maps each
        condition to rows ``[t, commands right and accepted, negatives accepted]``
        (fractions) for every threshold of the grid.

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
    table: dict[str, list[list[float]]] = {}
    pooled = np.zeros(len(THRESHOLD_GRID))
    for condition, probs in probabilities.items():
        top = probs.argmax(axis=1)
        score = probs[np.arange(len(probs)), top]
        rows = []
        for k, t in enumerate(THRESHOLD_GRID):
            accepted = phrase[top] & (score >= t)
            right = float(np.mean(accepted[commands] & (top[commands] == labels[commands])))
            false = float(np.mean(accepted[negatives]))
            pooled[k] += false / len(probabilities)
            rows.append([t, round(right, 4), round(false, 4)])
        table[condition] = rows
    met = np.flatnonzero(pooled <= MAX_FALSE_ACCEPT + 1e-12)
    if len(met):
        index = int(met[0])
        rule = THRESHOLD_RULE
    else:
        index = int(np.argmin(pooled))  # the first of equals: the lowest threshold
        rule = (
            f"{THRESHOLD_RULE}; no threshold met it, so the one with the fewest accepted on "
            f"average ({pooled[index]:.1%})"
        )
    threshold = THRESHOLD_GRID[index]
    summary = ", ".join(
        f"{condition}: {rows[index][1]:.1%} commands, {rows[index][2]:.1%} negatives"
        for condition, rows in table.items()
    )
    return {
        "threshold": float(threshold),
        "threshold_chosen": f"{rule} ({summary} at {threshold:.2f})",
        "calibration": table,
    }


def calibrate_threshold(
    samples: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int = 0,
) -> dict:
    """Scores ``samples`` in every condition of :data:`CALIBRATION_SNRS` with ``predict``
    (``(N, L)`` waveforms -> ``(N, C)`` probabilities) and applies :func:`choose_threshold`.
    """
    rng = np.random.default_rng(seed)
    probabilities = {}
    for snr in CALIBRATION_SNRS:
        condition = "clean" if snr is None else f"{snr:g} dB"
        probabilities[condition] = predict(with_white_noise(samples, snr, rng))
    return choose_threshold(probabilities, labels, names)
