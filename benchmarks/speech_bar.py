"""The speech bars: command accuracy, false accepts, real-time factor and event delay.

Builds a test set with espeak-ng (the commands of a commands file and everyday non-command
sentences, spoken by voices the command model never heard, at two speeds, clean and with
white noise at 20 and 10 dB SNR), runs each clip through the whole ``ubiq listen``
pipeline (Silero VAD, then the command engine) in 32 ms chunks, and prints:

* command accuracy: the clip gives exactly one ``speech.command`` and it is the phrase
  spoken (any other command event on the clip counts as wrong);
* false accepts: non-command sentences that give any ``speech.command``;
* wake phrase: clips of the wake phrase that give ``speech.wake``;
* real-time factor (processing seconds / audio seconds, VAD plus commands, one thread);
* delay from the true end of speech to the command event, in audio time (the chunk that
  closed the utterance, plus the wall time spent recognising it);
* VAD boundary errors against the true speech boundaries of the clips;
* with ``--near-misses``, phrases one or two words from a command ("turn on the garden
  light") that give any ``speech.command``, in a column of their own;
* with ``--sweep``, the command accuracy and acceptances at each given threshold.

::

    python benchmarks/speech_bar.py --model runs/commands/model.onnx
    python benchmarks/speech_bar.py --engine pocketsphinx
    python benchmarks/speech_bar.py --commands benchmarks/commands-home.txt \
        --near-miss-file benchmarks/near-misses-home.txt --model runs/home/model.onnx
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ubiq.models.datasets.command_training import DEFAULT_SENTENCES, HELD_OUT_VOICES  # noqa: E402
from ubiq.models.datasets.commands import make_clip  # noqa: E402
from ubiq.pipelines.speech.commands import load_commands  # noqa: E402
from ubiq.pipelines.speech.listen import SpeechPipeline  # noqa: E402
from ubiq.pipelines.speech.recognize import open_recognizer  # noqa: E402
from ubiq.pipelines.speech.vad import SileroVad, VadSegmenter  # noqa: E402
from ubiq.types import AudioChunk  # noqa: E402

NON_COMMANDS = (
    "the weather is nice today",
    "i would like a cup of coffee",
    "my brother lives in london",
    "please pass the salt",
    "this book is very interesting",
    "we went to the beach last summer",
    "she bought a new red car",
    "the train leaves at noon",
    "can you help me with my homework",
    "the dog is sleeping on the sofa",
    "turn left at the next corner",
    "i like the light in this room",
    "stop talking to me",
    "music makes me happy",
    "the kitchen is very small",
    "open a bank account",
    "the camera was expensive",
    "what a lovely garden",
)
"""Non-command sentences, none of them in the command model's training sentences; some
share words with the commands ("turn", "light", "stop", "music", "kitchen", "open")."""

NEAR_MISSES = (
    "turn on the garden light",
    "turn off the hallway light",
    "open the front door",
    "close the kitchen window",
    "play some videos",
    "set a timer for ten minutes",
    "start cooking dinner",
    "stop the car",
    "arm the alarm",
    "what day is it",
)
"""Phrases one or two words away from a demo command, for ``--near-misses``: none is a
command, and none is in the training sentences (the training set's own near-misses are
generated from the commands, so some may coincide with these by chance)."""

assert not set(NON_COMMANDS) & set(DEFAULT_SENTENCES)
assert not set(NEAR_MISSES) & set(DEFAULT_SENTENCES)


def run_clip(pipeline: SpeechPipeline, samples: np.ndarray, chunk: int = 512) -> list:
    events = []
    for start in range(0, len(samples), chunk):
        block = np.zeros(chunk, np.float32)
        part = samples[start : start + chunk]
        block[: len(part)] = part
        events.extend(pipeline.feed(AudioChunk(block, 16000, int(start * 1e9 / 16000))))
    events.extend(pipeline.flush())
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--commands",
        default=str(
            Path(__file__).resolve().parents[1] / "ubiq/data/models/ubiq-commands-demo.yaml"
        ),
    )
    parser.add_argument("--engine", choices=("model", "phones", "pocketsphinx"), default="model")
    parser.add_argument("--model", help="command model (ubiq train --task kws --commands ...)")
    parser.add_argument("--threshold", type=float)
    parser.add_argument(
        "--no-phone-check",
        action="store_true",
        help="--engine model: leave the phone check of the model's manifest off",
    )
    parser.add_argument("--voices", default=",".join(HELD_OUT_VOICES))
    parser.add_argument("--speeds", default="130,170")
    parser.add_argument("--snrs", default="clean,20,10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--near-misses",
        action="store_true",
        help="also play phrases one or two words away from a command (reported on their own)",
    )
    parser.add_argument(
        "--near-miss-file",
        help="near misses of your own commands, one per line (implies --near-misses)",
    )
    parser.add_argument(
        "--sweep",
        help="thresholds, e.g. 0.3,0.4,0.5,0.6: command accuracy and non-commands accepted "
        "per SNR at each, from the same clips (pick one on validation voices, not test ones)",
    )
    args = parser.parse_args()
    if args.engine == "model" and not args.model:
        parser.error("--engine model needs --model")

    commands = load_commands(args.commands)
    opened = time.perf_counter()
    recognizer = open_recognizer(
        commands,
        engine=args.engine,
        model=args.model,
        threshold=args.threshold,
        verify=not args.no_phone_check,
    )
    print(f"recogniser ready in {time.perf_counter() - opened:.1f} s", end="")
    if getattr(recognizer, "checker", None) is not None:
        print(f" (phone check at {recognizer.verify_threshold or 0.0:.2f})", end="")
    if getattr(recognizer, "phone_threshold", None) is not None:
        print(f" (phone recogniser first, at {recognizer.phone_threshold:.2f})", end="")
    calibration = getattr(recognizer, "calibration", None)
    if calibration is not None:
        print(
            f" (threshold {calibration.threshold:.2f} calibrated in {calibration.seconds:.1f} s "
            f"on {calibration.clips} clips: commands {calibration.commands_accepted:.1%}, near "
            f"misses {calibration.near_misses_accepted:.1%}, sentences "
            f"{calibration.sentences_accepted:.1%}; {calibration.rule})",
            end="",
        )
    print()
    vad = SileroVad(threads=1)
    voices = args.voices.split(",")
    speeds = [int(s) for s in args.speeds.split(",")]
    snrs = [None if s == "clean" else float(s) for s in args.snrs.split(",")]
    rng = np.random.default_rng(args.seed)
    items = [(t, "command") for t in commands.texts] + [(t, "other") for t in NON_COMMANDS]
    near_misses = NEAR_MISSES
    if args.near_miss_file:
        lines = Path(args.near_miss_file).read_text(encoding="utf-8").splitlines()
        near_misses = tuple(" ".join(line.lower().split()) for line in lines if line.strip())
    if args.near_misses or args.near_miss_file:
        items += [(t, "near") for t in near_misses if t not in commands.texts]
    if commands.wake:
        items.append((commands.wake, "wake"))
    print(
        f"engine {recognizer.name}"
        + (f" ({args.model})" if args.model else "")
        + f"; {len(commands.texts)} commands, {len(NON_COMMANDS)} non-commands; voices "
        f"{voices} (none used in training); speeds {speeds}; SNR {args.snrs} (white noise)"
    )
    results = []  # dicts
    audio_s = processing_s = 0.0
    for text, kind in items:
        for voice in voices:
            for speed in speeds:
                for snr in snrs:
                    clip = make_clip(text, voice, speed, 50, snr_db=snr, rng=rng)
                    segmenter = VadSegmenter(vad=vad)
                    pipeline = SpeechPipeline(segmenter, recognizer, wake_gate=False)
                    t0 = time.perf_counter()
                    events = run_clip(pipeline, clip.samples)
                    processing_s += time.perf_counter() - t0
                    audio_s += clip.duration_s
                    heard = [e for e in events if e.kind == "speech.command"]
                    wakes = [e for e in events if e.kind == "speech.wake"]
                    ends = [e for e in events if e.kind == "speech.end"]
                    row = dict(text=text, kind=kind, voice=voice, speed=speed, snr=snr)
                    if kind == "command":
                        row["ok"] = len(heard) == 1 and heard[0].payload["text"] == text
                        if heard:
                            row["delay"] = heard[0].timestamp_ns / 1e9 - clip.t_end
                    elif kind == "wake":
                        row["ok"] = len(wakes) >= 1 and not heard
                    else:
                        row["ok"] = not heard
                    if len(ends) == 1:
                        row["start_err"] = ends[0].payload["t_start"] - clip.t_start
                        row["end_err"] = ends[0].payload["t_end"] - clip.t_end
                    row["segments"] = len(ends)
                    row["heard"] = [(r.best, round(r.confidence, 2)) for r in pipeline.recognitions]
                    results.append(row)

    def rate(rows) -> str:
        good = sum(r["ok"] for r in rows)
        return f"{good}/{len(rows)} ({100 * good / max(1, len(rows)):.1f}%)"

    def false_accepts(rows) -> str:
        bad = sum(not r["ok"] for r in rows)
        return f"{bad}/{len(rows)} ({100 * bad / max(1, len(rows)):.1f}%)"

    near_cols = any(r["kind"] == "near" for r in results)
    print(
        "\n| condition | command accuracy | non-commands accepted | wake heard |"
        + (" near-misses accepted |" if near_cols else "")
    )
    print("|---|---|---|---|" + ("---|" if near_cols else ""))
    groups = [("snr", s) for s in snrs] + [("voice", v) for v in voices] + [("all", None)]
    for key, value in groups:
        rows = results if key == "all" else [r for r in results if r[key] == value]
        name = "all" if key == "all" else (
            f"SNR {'clean' if value is None else f'{value:g} dB'}" if key == "snr" else value
        )  # fmt: skip
        cmd = [r for r in rows if r["kind"] == "command"]
        other = [r for r in rows if r["kind"] == "other"]
        wake = [r for r in rows if r["kind"] == "wake"]
        near = [r for r in rows if r["kind"] == "near"]
        print(
            f"| {name} | {rate(cmd)} | {false_accepts(other)} | {rate(wake) if wake else '-'} |"
            + (f" {false_accepts(near)} |" if near_cols else "")
        )
    delays = sorted(r["delay"] for r in results if "delay" in r)
    if delays:
        p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
        print(
            f"\ncommand event delay after the end of speech (audio time): mean "
            f"{1000 * statistics.mean(delays):.0f} ms, p95 {1000 * p95:.0f} ms, "
            f"max {1000 * max(delays):.0f} ms; over 300 ms: {sum(d > 0.3 for d in delays)}"
        )
    print(f"real-time factor (VAD + commands, 1 thread): {processing_s / audio_s:.4f}")
    errs = defaultdict(list)
    for r in results:
        if "start_err" in r:
            errs[r["snr"]].append((abs(r["start_err"]), abs(r["end_err"])))
    for snr, pairs in errs.items():
        starts, ends_ = zip(*pairs)
        within = sum(max(p) <= 0.1 for p in pairs)
        print(
            f"VAD {'clean' if snr is None else f'{snr:g} dB'}: |start err| mean "
            f"{1000 * statistics.mean(starts):.0f} max {1000 * max(starts):.0f} ms, |end err| mean "
            f"{1000 * statistics.mean(ends_):.0f} max {1000 * max(ends_):.0f} ms, both within "
            f"100 ms {within}/{len(pairs)}"
        )
        by_voice = defaultdict(lambda: [0, 0])
        for r in results:
            if r["snr"] == snr and "start_err" in r:
                by_voice[r["voice"]][0] += max(abs(r["start_err"]), abs(r["end_err"])) <= 0.1
                by_voice[r["voice"]][1] += 1
        print(
            "    within 100 ms by voice: "
            + ", ".join(f"{v} {a}/{b}" for v, (a, b) in by_voice.items())
        )
    late = defaultdict(lambda: [0, 0])
    for r in results:
        if "delay" in r:
            late[r["voice"]][0] += r["delay"] > 0.3
            late[r["voice"]][1] += 1
    if any(a for a, _ in late.values()):
        print(
            "command events over 300 ms by voice: "
            + ", ".join(f"{v} {a}/{b}" for v, (a, b) in late.items())
        )
    off = [
        r for r in results if "start_err" in r and max(abs(r["start_err"]), abs(r["end_err"])) > 0.1
    ]
    for r in off[:10]:
        print(
            f"  VAD beyond 100 ms: {r['kind']} {r['text']!r} {r['voice']} {r['speed']} "
            f"{r['snr']}: start {1000 * r['start_err']:+.0f} ms, end {1000 * r['end_err']:+.0f} ms"
        )
    if args.sweep:
        _sweep(results, snrs, [float(t) for t in args.sweep.split(",")], commands)
    split = [r for r in results if r["segments"] != 1]
    print(f"clips not found as exactly one utterance: {len(split)}/{len(results)}")
    for r in split[:10]:
        print(f"  {r['kind']} {r['text']!r} {r['voice']} {r['speed']} {r['snr']}: {r['segments']}")
    wrong = [r for r in results if not r["ok"]]
    for r in wrong[:25]:
        print(
            f"  miss: {r['kind']} {r['text']!r} {r['voice']} {r['speed']} {r['snr']}: "
            f"{r['segments']} utterance(s), best guesses {r['heard']}"
        )
    return 0


def _sweep(results: list[dict], snrs: list, thresholds: list[float], commands) -> None:
    """What each threshold would give, from every recognition's best label and confidence.

    A command counts as recognised at ``t`` when exactly one of its utterances is heard as
    a command with confidence >= ``t`` and that is the right one; a non-command is accepted
    when any of its utterances is.
    """
    phrases = set(commands.texts)

    def accepted(row: dict, threshold: float) -> list[str]:
        return [
            best for best, confidence in row["heard"] if best in phrases and confidence >= threshold
        ]

    near_cols = any(r["kind"] == "near" for r in results)
    kinds = ["other", *(["near"] if near_cols else [])]
    heads = ["commands", "non-commands", *(["near-misses"] if near_cols else [])]
    print(
        "\n| threshold | "
        + " | ".join(f"{'clean' if s is None else f'{s:g} dB'} {h}" for s in snrs for h in heads)
        + " |"
    )
    print("|---|" + "---|" * len(heads) * len(snrs))
    for threshold in thresholds:
        cells = []
        for snr in snrs:
            rows = [r for r in results if r["snr"] == snr]
            cmd = [r for r in rows if r["kind"] == "command"]
            good = sum(accepted(r, threshold) == [r["text"]] for r in cmd)
            cells.append(f"{good}/{len(cmd)} ({100 * good / max(1, len(cmd)):.1f}%)")
            for kind in kinds:
                negatives = [r for r in rows if r["kind"] == kind]
                bad = sum(bool(accepted(r, threshold)) for r in negatives)
                cells.append(f"{bad}/{len(negatives)} ({100 * bad / max(1, len(negatives)):.1f}%)")
        print(f"| {threshold:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
