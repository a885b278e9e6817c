"""Does voice enrolment (``ubiq learn --task kws``) help a voice ubiq-commands-demo never heard?

For each voice (espeak-ng voices that read English with another language's rules, none of
them in the model's training or validation voices, see
``ubiq.models.datasets.command_training``), the "user" says each enrolled phrase three
times in a quiet room (speeds 140/155/170 wpm); those WAVs are enrolled exactly as ``ubiq
learn --task kws`` does (cut by the VAD, imprinted, written to a model folder). Then,
through the whole ``ubiq listen`` pipeline (Silero VAD, recogniser, wake gate off):

- detection: new utterances of the enrolled phrases by that voice at other speeds and
  pitches in white noise at ``--snr`` dB: the share heard as exactly that phrase;
- other commands: the commands that were *not* enrolled, same voice and noise: the share
  heard right (enrolment must not take them over);
- false accepts: sentences that are no command, and near misses ("hey google", "play
  some", ...), by that voice and by a voice the model knows, at the same SNR: how many
  gave a wake or command event.

Each number is given before (the shipped model) and after (the enrolled folder)::

    .venv/bin/python benchmarks/kws_enroll.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/kws_enroll.py --voices de,sv --snr 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from ubiq.models.datasets.commands import make_clip
from ubiq.models.runtime.kws_enroll import enrol, save_enrolled
from ubiq.models.runtime.tasks import KeywordModel
from ubiq.pipelines.speech.commands import load_commands
from ubiq.pipelines.speech.enroll import speech_part
from ubiq.pipelines.speech.listen import SpeechPipeline
from ubiq.pipelines.speech.recognize import ModelCommandRecognizer
from ubiq.pipelines.speech.vad import SileroVad, VadSegmenter
from ubiq.types import AudioChunk

ENROL_TAKES = ((140, 45), (155, 50), (170, 55))  # (wpm, pitch): three takes, quiet room
TEST_TAKES = ((120, 35), (150, 65), (185, 45), (165, 75))  # other speeds and pitches
SENTENCES = (
    "the library opens on monday",
    "my sister plays the violin",
    "is the kitchen door locked",
    "we had pasta for lunch",
    "the volume of the box is large",
    "turn the page please",
)
NEAR_MISSES = (
    "hey google",
    "hey you",
    "play some",
    "turn on the light",
    "what is it",
    "start the car",
)
KNOWN_VOICE = "en-us-nyc"  # the model hears it (tests/pipelines/test_commands_demo.py)


def _events(pipeline: SpeechPipeline, samples: np.ndarray) -> list:
    events = []
    for start in range(0, len(samples), 512):
        block = np.zeros(512, np.float32)
        part = samples[start : start + 512]
        block[: len(part)] = part
        events += pipeline.feed(AudioChunk(block, 16000, int(start * 1e9 / 16000)))
    return events + pipeline.flush()


def _heard(recognizer, vad, samples: np.ndarray) -> list[str]:
    pipeline = SpeechPipeline(VadSegmenter(vad=vad), recognizer, wake_gate=False)
    kinds = ("speech.command", "speech.wake")
    return [e.payload["text"] for e in _events(pipeline, samples) if e.kind in kinds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="de,sv,hu,es,pl", help="unseen espeak-ng voices")
    parser.add_argument(
        "--phrases",
        default="hey ubiq,play some music,turn on the kitchen light,what time is it",
        help="the phrases each voice enrols",
    )
    parser.add_argument("--snr", type=float, default=10.0, help="test SNR in dB (white noise)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    commands = load_commands(files("ubiq.data") / "models" / "ubiq-commands-demo.yaml")
    enrolled = [p.strip() for p in args.phrases.split(",") if p.strip()]
    others = [p for p in commands.texts if p not in enrolled]
    rng = np.random.default_rng(args.seed)
    model = KeywordModel.load("ubiq-commands-demo", num_threads=1)
    before = ModelCommandRecognizer("ubiq-commands-demo", commands)
    vad = SileroVad()
    started = time.perf_counter()
    keys = ("hit", "other", "fa_sentence", "fa_near", "fa_known")
    totals = {key: np.zeros(2, int) for key in keys}
    counts = dict.fromkeys(keys, 0)
    print(
        f"enrolled: {', '.join(enrolled)}; 3 clean takes each; tests at {args.snr:g} dB SNR; "
        f"each cell: before -> after\n{'voice':<6} {'detected':>16} {'other commands':>16} "
        f"{'FA sentences':>16} {'FA near misses':>16} {'FA ' + KNOWN_VOICE:>16}"
    )
    with tempfile.TemporaryDirectory(prefix="ubiq-kws-enroll-") as folder:
        for voice in [v.strip() for v in args.voices.split(",") if v.strip()]:
            utterances = {
                phrase: [
                    speech_part(
                        make_clip(
                            phrase, voice, wpm, pitch, snr_db=None, lead_s=0.6, tail_s=0.6
                        ).samples,
                        vad,
                    )  # fmt: skip
                    for wpm, pitch in ENROL_TAKES
                ]
                for phrase in enrolled
            }
            out = Path(folder) / voice
            save_enrolled(out, model, enrol(model, utterances))
            after = ModelCommandRecognizer(out, commands)
            row = {key: np.zeros(2, int) for key in totals}
            size = dict.fromkeys(counts, 0)

            def score(
                key, text, speaker, wpm, pitch, want, pair=(before, after), row=row, size=size
            ):
                clip = make_clip(text, speaker, wpm, pitch, snr_db=args.snr, rng=rng).samples
                for column, recognizer in enumerate(pair):
                    row[key][column] += want(_heard(recognizer, vad, clip))
                size[key] += 1

            for phrase in enrolled:
                for wpm, pitch in TEST_TAKES:
                    score("hit", phrase, voice, wpm, pitch, lambda h, p=phrase: h == [p])
            for phrase in others:
                score("other", phrase, voice, 160, 50, lambda h, p=phrase: h == [p])
            for text in SENTENCES + NEAR_MISSES:
                key = "fa_sentence" if text in SENTENCES else "fa_near"
                score(key, text, voice, 155, 50, lambda h: len(h) > 0)
                score("fa_known", text, KNOWN_VOICE, 155, 50, lambda h: len(h) > 0)
            cells = [f"{row[k][0]:>2}/{size[k]:<2} -> {row[k][1]:>2}/{size[k]:<2}" for k in keys]
            print(f"{voice:<6} " + " ".join(f"{cell:>16}" for cell in cells))
            for key in totals:
                totals[key] += row[key]
                counts[key] += size[key]
            sys.stdout.flush()
    print(
        "total: "
        + "; ".join(
            f"{name} {totals[k][0] / counts[k]:.0%} -> {totals[k][1] / counts[k]:.0%}"
            for name, k in (
                ("detected", "hit"),
                ("other commands right", "other"),
                ("false accepts: sentences", "fa_sentence"),
                ("near misses", "fa_near"),
                (KNOWN_VOICE, "fa_known"),
            )
        )
        + f"  [{time.perf_counter() - started:.0f} s]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
