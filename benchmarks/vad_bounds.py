"""Boundary accuracy, end-of-speech latency, splits and speed of the Silero VAD segmenter.

```bash
.venv/bin/python benchmarks/vad_bounds.py [--clips 20] [--seeds 0,1,2] [--threads 1] \
    [--noise white] [--threshold 0.5] [--neg-threshold T] [--min-silence-ms 128] \
    [--min-speech-ms 150] [--speech-pad-ms 30] [--no-energy] [--quiet-ms 176] \
    [--tail-ms-per-db 2.5] [--echo-rho 0.5]
```

For each seed, speaks ``--clips`` command phrases with espeak-ng (voices, speeds and the
silence before each phrase drawn from the seed; the lead is random so phrases do not start
on the 32 ms frame grid) and plays each one clean, with ``--noise`` noise at 20 dB SNR and
at 10 dB SNR through :class:`~ubiq.pipelines.speech.vad.VadSegmenter` in 512-sample chunks.
The true speech boundaries are known from how the clips were made: the first sound, and
the end of the last phoneme as espeak-ng placed it (:mod:`ubiq.models.datasets.commands`;
an echo after it, as the ``+f`` voices add, is not speech).

For each condition it prints:

- ``ok``: clips that gave exactly one segment (the others are left out of the errors);
- ``split``: clips that gave another number of segments (a command split in two, or
  missed), listed below the table;
- ``|start err|`` and ``|end err|`` (ms, mean / max): reported boundary (``t_start`` and
  ``t_end``, unpadded) minus the true one;
- ``end bias``: the signed mean end error (positive: the segment ends late);
- ``end latency`` (ms, mean / 95th percentile / max): ``emitted_at`` of ``speech.end``
  minus the true end of speech, in audio time: how long after the speaker stops the event
  is out;
- ``within 100 ms``: clips whose start and end are both within 100 ms.

Then the worst of all conditions, and the real-time factor: seconds spent in
``VadSegmenter.feed`` (model included) per second of audio, with ``--threads``
onnxruntime threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from ubiq.models.datasets.commands import Clip, make_clip
from ubiq.pipelines.speech.vad import FRAME_SAMPLES, SileroVad, VadOptions, VadSegmenter
from ubiq.types import AudioChunk

PHRASES = (
    "turn on the light",
    "stop",
    "what time is it",
    "play music",
    "lights off",
    "open the door",
    "volume up",
    "next song",
    "set a timer for five minutes",
    "go back",
    "turn on the kitchen light",
)
VOICES = ("en-us", "en-gb-scotland+m5", "en+f4", "en-us+f3", "en-gb", "en-us+m3")
SPEEDS = (130, 160, 190)
CONDITIONS = (None, 20.0, 10.0)


def run_clip(segmenter: VadSegmenter, samples: np.ndarray, sample_rate: int) -> tuple[list, float]:
    """Streams one clip; returns the events and the seconds spent in ``feed``/``flush``."""
    events = []
    spent = 0.0
    for first in range(0, len(samples), FRAME_SAMPLES):
        chunk = AudioChunk(
            samples[first : first + FRAME_SAMPLES],
            sample_rate,
            first * 1_000_000_000 // sample_rate,
        )
        start = time.perf_counter()
        events.extend(segmenter.feed(chunk))
        spent += time.perf_counter() - start
    start = time.perf_counter()
    events.extend(segmenter.flush())
    return events, spent + time.perf_counter() - start


def make_clips(count: int, seed: int, noise: str = "white") -> list[tuple[str, Clip]]:
    """``count`` phrases, each clean and at 20 and 10 dB SNR (same speech, same lead)."""
    rng = np.random.default_rng(seed)
    clips = []
    for index in range(count):
        text = PHRASES[index % len(PHRASES)]
        voice = VOICES[int(rng.integers(len(VOICES)))]
        speed = int(rng.choice(SPEEDS))
        lead_s = float(rng.uniform(0.5, 1.0))
        for snr_db in CONDITIONS:
            clip = make_clip(
                text, voice, speed, 50, snr_db=snr_db, lead_s=lead_s, noise=noise, rng=rng
            )
            clips.append((f"seed {seed} #{index}", clip))
    return clips


def energy_bounds(clean: Clip, depth_db: float, frame_s: float = 0.010) -> tuple[float, float]:
    """Start and end of the speech in a clean clip by frame energy: the first and last
    ``frame_s`` frame within ``depth_db`` of the loudest frame (a second view of "the true
    boundary": the default one counts any sample above 1e-3, 54 dB below the peak)."""
    rate = clean.sample_rate
    first, last = round(clean.t_start * rate), round(clean.t_end * rate)
    size = round(frame_s * rate)
    speech = clean.samples[first:last].astype(np.float64)
    count = max(1, len(speech) // size)
    energy = np.array([np.mean(speech[i * size : (i + 1) * size] ** 2) for i in range(count)])
    level = 10 * np.log10(np.maximum(energy, 1e-20))
    loud = np.flatnonzero(level >= level.max() - depth_db)
    return clean.t_start + loud[0] * frame_s, clean.t_start + (loud[-1] + 1) * frame_s


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    magnitudes = np.abs(values) * 1e3
    return f"{magnitudes.mean():5.0f} / {magnitudes.max():4.0f}"


def _options(args: argparse.Namespace) -> VadOptions:
    """The options from the command line (the energy ones only where the class has them)."""
    values = {
        "threshold": args.threshold,
        "neg_threshold": args.neg_threshold,
        "min_speech_ms": args.min_speech_ms,
        "min_silence_ms": args.min_silence_ms,
        "speech_pad_ms": args.speech_pad_ms,
        "energy": not args.no_energy,
        "quiet_ms": args.quiet_ms,
        "tail_ms_per_db": args.tail_ms_per_db,
        "echo_rho": args.echo_rho,
    }
    fields = {field.name for field in dataclasses.fields(VadOptions)}
    return VadOptions(**{k: v for k, v in values.items() if k in fields and v is not None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=20, help="phrases per seed (x3 conditions)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    parser.add_argument("--noise", default="white", choices=("white", "pink", "brown"))
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--threshold", type=float, default=VadOptions.threshold)
    parser.add_argument("--neg-threshold", type=float, default=None)
    parser.add_argument("--min-silence-ms", type=float, default=VadOptions.min_silence_ms)
    parser.add_argument("--min-speech-ms", type=float, default=VadOptions.min_speech_ms)
    parser.add_argument("--speech-pad-ms", type=float, default=VadOptions.speech_pad_ms)
    parser.add_argument("--no-energy", action="store_true", help="the model alone")
    parser.add_argument("--quiet-ms", type=float, default=None)
    parser.add_argument("--tail-ms-per-db", type=float, default=None)
    parser.add_argument(
        "--echo-rho", type=float, default=None, help="the echo test's correlation (0: off)"
    )
    parser.add_argument(
        "--energy-truth-db",
        type=float,
        default=None,
        help="also count clips within 100 ms of the energy boundary of the clean speech "
        "(first/last 10 ms frame within this many dB of the loudest)",
    )
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    options = _options(args)
    segmenter = VadSegmenter(options, SileroVad(threads=args.threads))
    clips = [clip for seed in seeds for clip in make_clips(args.clips, seed, args.noise)]
    results: dict[float | None, dict[str, list]] = {
        snr: {"start": [], "end": [], "latency": [], "within": [], "bad": [], "within_e": []}
        for snr in CONDITIONS
    }
    audio_s = spent_s = 0.0
    energy_truth: dict[str, tuple[float, float]] = {}
    for name, clip in clips:
        if args.energy_truth_db is not None and clip.snr_db is None:  # clean comes first
            energy_truth[name] = energy_bounds(clip, args.energy_truth_db)
        events, spent = run_clip(segmenter, clip.samples, clip.sample_rate)
        audio_s += clip.duration_s
        spent_s += spent
        row = results[clip.snr_db]
        ends = [event for event in events if event.kind == "speech.end"]
        starts = [event for event in events if event.kind == "speech.start"]
        if len(ends) != 1 or len(starts) != 1:
            row["bad"].append(f"{name} {clip.text!r} {clip.voice}: {len(ends)} segments")
            continue
        start_error = ends[0].t_start - clip.t_start
        end_error = ends[0].t_end - clip.t_end
        row["start"].append(start_error)
        row["end"].append(end_error)
        row["latency"].append(ends[0].emitted_at - clip.t_end)
        row["within"].append(max(abs(start_error), abs(end_error)) <= 0.1)
        if name in energy_truth:
            true_start, true_end = energy_truth[name]
            errors = (ends[0].t_start - true_start, ends[0].t_end - true_end)
            row["within_e"].append(max(abs(e) for e in errors) <= 0.1)
    print(f"options: {options} (neg_threshold resolved to {options.exit_threshold:g})")
    print(f"seeds {','.join(map(str, seeds))}, {args.clips} phrases each, {args.noise} noise")
    header = (
        f"{'condition':>9} | {'ok':>7} | {'split':>5} | {'|start err| ms':>14} | "
        f"{'|end err| ms':>12} | {'end bias':>8} | {'end latency ms':>15} | {'within 100 ms':>13}"
    )
    print(header)
    print("-" * len(header))
    for snr, row in results.items():
        name = "clean" if snr is None else f"{snr:g} dB"
        total = len(row["start"]) + len(row["bad"])
        bias = f"{np.mean(row['end']) * 1e3:+6.0f}" if row["end"] else "-"
        latency = "-"
        if row["latency"]:
            values = np.asarray(row["latency"]) * 1e3
            latency = (
                f"{values.mean():3.0f} / {np.percentile(values, 95):3.0f} / {values.max():3.0f}"
            )
        print(
            f"{name:>9} | {len(row['start']):>3}/{total:<3} | {len(row['bad']):>5} | "
            f"{_ms(row['start']):>14} | {_ms(row['end']):>12} | {bias:>8} | {latency:>15} | "
            f"{sum(row['within']):>6}/{len(row['within']):<6}"
        )
        if row["within_e"]:
            print(
                f"{'':>12}within 100 ms of the clean speech's -{args.energy_truth_db:g} dB "
                f"energy boundaries: {sum(row['within_e'])}/{len(row['within_e'])}"
            )
        for line in row["bad"]:
            print(f"{'':>12}{line}")
    rows = results.values()
    errors = [abs(e) for row in rows for key in ("start", "end") for e in row[key]]
    latencies = [value for row in rows for value in row["latency"]]
    if errors:
        print(
            f"worst of all: boundary error {max(errors) * 1e3:.0f} ms, end latency "
            f"{max(latencies) * 1e3:.0f} ms, {sum(len(row['bad']) for row in rows)} split or "
            f"missed, {sum(not w for row in rows for w in row['within'])} beyond 100 ms"
        )
    print(
        f"real-time factor ({args.threads} thread(s)): {spent_s / audio_s:.4f} "
        f"({spent_s:.2f} s for {audio_s:.1f} s of audio, "
        f"{spent_s / audio_s * 1e3 * FRAME_SAMPLES / 16000:.3f} ms per 32 ms frame)"
    )


if __name__ == "__main__":
    main()
