"""Word error rate and speed of each transcription engine on espeak-ng speech.

Speaks everyday sentences with espeak-ng (several voices, one speed, clean and in white
noise), gives each engine the audio of every sentence (the speech with 100 ms either side,
as ``ubiq listen --transcribe`` gives it an utterance) and prints, per engine, voice and
SNR, the word error rate (substitutions, deletions and insertions over the reference
words, after lower-casing and dropping punctuation) and the real-time factor.

An engine that cannot be opened (not installed, or its model cannot be had offline) is
listed with the reason, so the table says which engines were tried.

::

    python benchmarks/transcribe_wer.py [--engines pocketsphinx,faster-whisper,whisper]
        [--voices en-us,en-us+klatt,en-gb] [--speed 150] [--snrs clean,20] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speech_bar import NON_COMMANDS  # noqa: E402

from ubiq.errors import UbiqError  # noqa: E402
from ubiq.models.datasets.commands import make_clip  # noqa: E402
from ubiq.pipelines.speech.transcribe import open_transcriber, word_errors, words  # noqa: E402

MARGIN_S = 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="pocketsphinx,faster-whisper,whisper")
    parser.add_argument("--voices", default="en-us,en-us+klatt,en-gb")
    parser.add_argument("--speed", type=int, default=150)
    parser.add_argument("--snrs", default="clean,20")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    voices = args.voices.split(",")
    snrs = [None if s == "clean" else float(s) for s in args.snrs.split(",")]
    engines = []
    for name in args.engines.split(","):
        try:
            engines.append(open_transcriber(name))
        except UbiqError as error:
            print(f"{name}: not tried ({error})")
    if not engines:
        print("no engine could be opened", file=sys.stderr)
        return 5
    rng = np.random.default_rng(args.seed)
    clips = [
        (voice, snr, text, make_clip(text, voice, args.speed, 50, snr_db=snr, rng=rng))
        for text in NON_COMMANDS
        for voice in voices
        for snr in snrs
    ]
    print(
        f"{len(NON_COMMANDS)} sentences x {len(voices)} voices x {len(snrs)} SNRs (white "
        f"noise), speed {args.speed}; engines: {', '.join(e.name for e in engines)}"
    )
    print(f"{'engine':>14} | {'voice':>16} | {'SNR':>5} | {'WER':>6} | {'words':>5} | RTF")
    print("-" * 64)
    for engine in engines:
        totals = [0, 0, 0.0, 0.0]  # errors, words, seconds, audio seconds
        examples = []
        for voice in voices:
            for snr in snrs:
                errors = count = 0
                spent = audio = 0.0
                for clip_voice, clip_snr, text, clip in clips:
                    if clip_voice != voice or clip_snr != snr:
                        continue
                    rate = clip.sample_rate
                    first = max(0, round((clip.t_start - MARGIN_S) * rate))
                    last = round((clip.t_end + MARGIN_S) * rate)
                    samples = clip.samples[first:last]
                    start = time.perf_counter()
                    heard = engine.transcribe(samples).text
                    spent += time.perf_counter() - start
                    audio += len(samples) / rate
                    reference = words(text)
                    wrong = word_errors(text, heard)
                    errors, count = errors + wrong, count + len(reference)
                    if wrong and len(examples) < 4:
                        examples.append(f"{voice} {snr}: {text!r} -> {heard!r}")
                snr_name = "clean" if snr is None else f"{snr:g}"
                print(
                    f"{engine.name:>14} | {voice:>16} | {snr_name:>5} | "
                    f"{errors / count:6.1%} | {count:5d} | {spent / audio:.3f}"
                )
                totals = [
                    totals[0] + errors,
                    totals[1] + count,
                    totals[2] + spent,
                    totals[3] + audio,
                ]
        print(
            f"{engine.name:>14} | {'all':>16} | {'':>5} | {totals[0] / totals[1]:6.1%} | "
            f"{totals[1]:5d} | {totals[2] / totals[3]:.3f}"
        )
        for example in examples:
            print(f"    e.g. {example}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
