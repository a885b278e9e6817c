"""The wake phrase and a command in one utterance ("hey ubiq, turn on the kitchen light").

Speaks, with espeak-ng, voices the command model never heard, at two speeds, clean and in
white noise:

* ``pause``: the wake phrase, a comma and a command (espeak-ng pauses at the comma);
* ``run-on``: the wake phrase and a command with no comma (no pause but the words' own);
* ``wake+other``: the wake phrase, a comma and a non-command sentence;
* ``other``: a non-command sentence alone;
* ``command``: a command alone, with no wake phrase (it must give neither a wake nor a
  command: the gate is closed).

Each clip goes through the whole ``ubiq listen`` pipeline with the wake gate on, twice
from the same audio: with the split of one utterance into wake phrase and command
(``SpeechPipeline(split_wake=True)``, the default) and without it. It prints, per kind
and SNR, for both: clips right (``pause``/``run-on``: exactly ``speech.wake`` then the
spoken command; ``wake+other``: a ``speech.wake`` and no command; ``other``: no command
and no wake; ``command``: no command and no wake), commands wrongly given, false wakes on
``other`` and ``command``, and how many clips the VAD
already split in two. Then the mean and worst extra processing per utterance the split
costs, and the delay of the command event after the end of speech.

::

    python benchmarks/wake_command.py [--voices V1,V2] [--speeds 130,170] [--snrs clean,10]
        [--commands 8] [--seed 0] [--model ubiq-commands-demo] [--kinds pause,command]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speech_bar import NON_COMMANDS, run_clip  # noqa: E402

from ubiq.models.datasets.command_training import HELD_OUT_VOICES  # noqa: E402
from ubiq.models.datasets.commands import make_clip  # noqa: E402
from ubiq.pipelines.speech.commands import load_commands  # noqa: E402
from ubiq.pipelines.speech.listen import SpeechPipeline  # noqa: E402
from ubiq.pipelines.speech.recognize import open_recognizer  # noqa: E402
from ubiq.pipelines.speech.vad import SileroVad, VadSegmenter  # noqa: E402

KINDS = ("pause", "run-on", "wake+other", "other", "command")


def judge(kind: str, events: list, wake: str, command: str | None) -> dict:
    """Whether the events are right for a clip of ``kind``, and what went wrong."""
    said = [
        (e.kind, e.payload["text"]) for e in events if e.kind in ("speech.wake", "speech.command")
    ]
    commands = [text for name, text in said if name == "speech.command"]
    wakes = [text for name, text in said if name == "speech.wake"]
    if kind in ("pause", "run-on"):
        ok = said == [("speech.wake", wake), ("speech.command", command)]
        wrong = any(text != command for text in commands)
    elif kind == "wake+other":
        ok, wrong = bool(wakes) and not commands, bool(commands)
    else:
        ok, wrong = not said, bool(commands)
    return {"ok": ok, "wrong": wrong, "false_wake": kind in ("other", "command") and bool(wakes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--commands-file",
        default=str(
            Path(__file__).resolve().parents[1] / "ubiq/data/models/ubiq-commands-demo.yaml"
        ),
    )
    parser.add_argument("--model", default="ubiq-commands-demo")
    parser.add_argument("--voices", default=",".join(HELD_OUT_VOICES))
    parser.add_argument("--speeds", default="130,170")
    parser.add_argument("--snrs", default="clean,10")
    parser.add_argument("--commands", type=int, default=8, help="how many of the commands")
    parser.add_argument("--others", type=int, default=8, help="how many non-command sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help="which kinds of clip")
    args = parser.parse_args()

    commands = load_commands(args.commands_file)
    if not commands.wake:
        parser.error(f"{args.commands_file} has no wake phrase")
    recognizer = open_recognizer(commands, engine="model", model=args.model)
    vad = SileroVad(threads=1)
    rng = np.random.default_rng(args.seed)
    voices = args.voices.split(",")
    speeds = [int(s) for s in args.speeds.split(",")]
    snrs = [None if s == "clean" else float(s) for s in args.snrs.split(",")]
    picks = rng.permutation(len(commands.texts))[: args.commands]
    chosen = [commands.texts[int(i)] for i in picks]
    others = list(NON_COMMANDS[: args.others])
    items = [(f"{commands.wake}, {c}", "pause", c) for c in chosen]
    items += [(f"{commands.wake} {c}", "run-on", c) for c in chosen]
    items += [(f"{commands.wake}, {o}", "wake+other", None) for o in others]
    items += [(o, "other", None) for o in others]
    items += [(c, "command", None) for c in chosen]
    kinds = [k for k in KINDS if k in args.kinds.split(",")]
    items = [item for item in items if item[1] in kinds]
    print(
        f"model {args.model}, wake phrase {commands.wake!r}; commands {chosen}; voices {voices} "
        f"(none used in training); speeds {speeds}; SNR {args.snrs} (white noise)"
    )
    table: dict = defaultdict(lambda: defaultdict(int))
    extra_s: list[float] = []
    delays: list[float] = []
    misses: list[str] = []
    for text, kind, command in items:
        for voice in voices:
            for speed in speeds:
                for snr in snrs:
                    clip = make_clip(text, voice, speed, 50, snr_db=snr, rng=rng)
                    row = table[(kind, snr)]
                    row["clips"] += 1
                    spent = {}
                    for split in (True, False):
                        pipeline = SpeechPipeline(
                            VadSegmenter(vad=vad), recognizer, split_wake=split
                        )
                        started = time.perf_counter()
                        events = run_clip(pipeline, clip.samples)
                        spent[split] = time.perf_counter() - started
                        verdict = judge(kind, events, commands.wake, command)
                        tag = "split" if split else "plain"
                        for key, value in verdict.items():
                            row[f"{tag}_{key}"] += int(value)
                        if split and not verdict["ok"]:
                            said = [
                                (e.kind.split(".")[1], e.payload["text"], e.payload["confidence"])
                                for e in events
                                if e.kind in ("speech.wake", "speech.command")
                            ]
                            misses.append(f"{kind} {snr} {voice} {speed} {text!r}: {said}")
                        if split:
                            row["two_segments"] += sum(e.kind == "speech.end" for e in events) > 1
                            heard = [e for e in events if e.kind == "speech.command"]
                            if verdict["ok"] and heard:
                                delays.append(heard[-1].timestamp_ns / 1e9 - clip.t_end)
                            utterances = max(1, pipeline.stats.utterances)
                    extra_s.append((spent[True] - spent[False]) / utterances)
    header = (
        f"{'kind':>10} | {'SNR':>5} | {'clips':>5} | {'VAD split':>9} | {'right, split':>12} | "
        f"{'right, plain':>12} | {'wrong cmd s/p':>13} | {'false wake s/p':>14}"
    )
    print(header)
    print("-" * len(header))
    for kind in kinds:
        for snr in snrs:
            row = table[(kind, snr)]
            n = row["clips"]
            print(
                f"{kind:>10} | {'clean' if snr is None else f'{snr:g} dB':>5} | {n:>5} | "
                f"{row['two_segments']:>9} | {row['split_ok']:>4} ({row['split_ok'] / n:4.0%}) | "
                f"{row['plain_ok']:>4} ({row['plain_ok'] / n:4.0%}) | "
                f"{row['split_wrong']:>6}/{row['plain_wrong']:<6} | "
                f"{row['split_false_wake']:>7}/{row['plain_false_wake']:<6}"
            )
    for line in misses:
        print(f"  wrong with the split: {line}")
    extra = np.asarray(extra_s) * 1e3
    print(
        f"split cost per utterance (one thread, wall time): mean {extra.mean():+.1f} ms, "
        f"worst {extra.max():+.1f} ms"
    )
    if delays:
        print(
            f"command event after the end of speech (split on): mean {np.mean(delays) * 1e3:.0f} "
            f"ms, worst {np.max(delays) * 1e3:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
