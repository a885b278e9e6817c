"""Speech on real recordings of people: VAD bounds, commands heard, false accepts.

The recordings are PocketSphinx's own test data (BSD licence), real people recorded by CMU
and LibriVox (public domain), inside the pocketsphinx source archive on PyPI::

    url=$(curl -s https://pypi.org/simple/pocketsphinx/ \\
          | grep -o 'https://files[^"#]*pocketsphinx-5.1.1.tar.gz' | head -1)
    curl -sL "$url" | tar xz -C /tmp pocketsphinx-5.1.1/test/data
    .venv/bin/python benchmarks/real_speech.py --data /tmp/pocketsphinx-5.1.1/test/data \\
        [--model runs/home/model.onnx --commands benchmarks/commands-home.txt]

Three checks:

- **VAD on read speech** (``librivox/*.wav``, one reader, five sentences, 2.99-7.10 s, with
  a forced alignment of every word in ``*.json``): the first utterance's start and the last
  one's end against the first and last aligned word, with each end-of-speech rule of
  :class:`~ubiq.pipelines.speech.vad.VadOptions` on (the defaults) and off in turn: the
  echo test (``echo_rho=0``), the dynamic-range floor (``dynamic_range_db=200``), buried
  speech after the last level (``tail_ms_per_db=0``) and the energy refinement itself
  (``energy=False``: Silero's own frames).
- **Commands heard, no training** (``ubiq listen --commands`` with no model: the shipped
  phone recogniser, and PocketSphinx with a grammar): phrases that real people say in the
  recordings are the command list ("go forward ten meters" in ``goforward.raw``; "ten of
  clubs", "seven of clubs", "five five" in ``cards/``), each must be heard as exactly
  itself; the same list must accept nothing in the LibriVox sentences, the other card
  recordings, ``numbers.raw`` and ``something.raw`` (other words by real people).
- With ``--model`` (a model trained by ``ubiq train --task kws --commands``), the same
  real recordings must give none of its commands (false accepts on real speech).
- With ``--wake-recording FILE --wake PHRASE``, a real recording of someone saying a wake
  phrase (16 kHz mono WAV), with a second of silence put around it as a stream has: the
  no-training recogniser of the commands above with that wake phrase, at the threshold it
  calibrates, must wake on it, and on none of PocketSphinx's recordings. One such
  recording that can be had offline: ``resources/snowboy.wav`` of the snowboy npm package
  (Apache-2.0, KITT.AI's test recording of the hotword "snowboy")::

    npm pack snowboy && tar xzf snowboy-1.3.1.tgz package/resources/snowboy.wav
    .venv/bin/python benchmarks/real_speech.py --data ... --engines phones \
        --wake-recording package/resources/snowboy.wav --wake snowboy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speech_bar import run_clip  # noqa: E402  (benchmarks/ is sys.path[0])

from ubiq.models.runtime.audio_features import read_wav  # noqa: E402
from ubiq.pipelines.speech.commands import CommandSet, load_commands  # noqa: E402
from ubiq.pipelines.speech.listen import SpeechPipeline  # noqa: E402
from ubiq.pipelines.speech.recognize import open_recognizer  # noqa: E402
from ubiq.pipelines.speech.vad import SileroVad, VadOptions, VadSegmenter  # noqa: E402

VARIANTS = {
    "defaults": {},
    "no echo test": {"echo_rho": 0.0},
    "no dynamic-range floor": {"dynamic_range_db": 200.0},
    "no buried-speech tail": {"tail_ms_per_db": 0.0},
    "Silero frames only": {"energy": False},
}
SAID = {  # recording -> what its speaker says (the archive's transcriptions)
    "goforward.raw": "go forward ten meters",
    "cards/001.wav": "ten of clubs",
    "cards/002.wav": "four queen of clubs",
    "cards/003.wav": "seven of clubs",
    "cards/004.wav": "five five",
    "cards/005.wav": "eight of spades four of clubs seven of hearts",
}
COMMANDS = ("go forward ten meters", "ten of clubs", "seven of clubs", "five five")


def load(path: Path) -> np.ndarray:
    if path.suffix == ".raw":  # 16 kHz, 16-bit little-endian mono
        return np.fromfile(path, "<i2").astype(np.float32) / 32768.0
    samples, rate = read_wav(path)
    if rate != 16000:
        raise SystemExit(f"{path}: {rate} Hz, expected 16000")
    return samples


def vad_check(data: Path, vad: SileroVad) -> None:
    clips = sorted((data / "librivox").glob("*.wav"))
    print(f"VAD on {len(clips)} LibriVox sentences (errors in ms: + late, - early)")
    print("| rules | start errors | end errors | utterances per sentence |")
    print("|---|---|---|---|")
    for name, change in VARIANTS.items():
        starts, ends, counts = [], [], []
        for wav in clips:
            words = json.loads(wav.with_suffix(".json").read_text())["w"]
            spoken = [w for w in words if not w["t"].startswith("<")]
            first, last = spoken[0]["b"], spoken[-1]["b"] + spoken[-1]["d"]
            segmenter = VadSegmenter(VadOptions(**change), vad=vad)
            bounds = [
                (e.t_start, e.t_end)
                for e in run_clip(segmenter, load(wav))
                if e.kind == "speech.end"
            ]
            counts.append(len(bounds))
            if bounds:
                starts.append(1000 * (bounds[0][0] - first))
                ends.append(1000 * (bounds[-1][1] - last))
        print(
            f"| {name} | {', '.join(f'{v:+.0f}' for v in starts)} | "
            f"{', '.join(f'{v:+.0f}' for v in ends)} | {counts} |"
        )


def heard(recognizer, vad: SileroVad, samples: np.ndarray) -> list[str]:
    pipeline = SpeechPipeline(VadSegmenter(vad=vad), recognizer, wake_gate=False)
    kinds = ("speech.command", "speech.wake")
    return [e.payload["text"] for e in run_clip(pipeline, samples) if e.kind in kinds]


def others(data: Path) -> list[Path]:
    paths = sorted((data / "librivox").glob("*.wav"))
    paths += [data / name for name in ("numbers.raw", "something.raw")]
    return paths + [data / name for name, text in SAID.items() if text not in COMMANDS]


def command_check(data: Path, vad: SileroVad, engine: str) -> None:
    recognizer = open_recognizer(CommandSet.from_phrases(COMMANDS), engine=engine)
    threshold = f", threshold {recognizer.threshold:.2f}" if engine == "phones" else ""
    print(f"\nno training ({engine}{threshold}), commands {list(COMMANDS)}")
    right = 0
    for name, text in SAID.items():
        if text in COMMANDS:
            got = heard(recognizer, vad, load(data / name))
            right += got == [text]
            print(f"  {name} ({text!r}): heard {got}")
    total = sum(text in COMMANDS for text in SAID.values())
    print(f"  commands heard exactly: {right}/{total}")
    false_accepts(recognizer, data, vad)


def false_accepts(recognizer, data: Path, vad: SileroVad) -> None:
    bad = 0
    paths = others(data)
    for path in paths:
        got = heard(recognizer, vad, load(path))
        bad += bool(got)
        if got:
            print(f"  false accept in {path.relative_to(data)}: {got}")
    print(f"  recordings of other words with any command accepted: {bad}/{len(paths)}")


def wake_check(data: Path, vad: SileroVad, recording: Path, wake: str) -> None:
    recognizer = open_recognizer(CommandSet.from_phrases(COMMANDS, wake=wake), engine="phones")
    silence = np.zeros(16000, np.float32)
    samples = np.concatenate([silence, load(recording), silence])
    index = recognizer.phrases.index(recognizer.commands.wake)
    score = recognizer.scores(samples)[index]
    got = heard(recognizer, vad, samples)
    print(
        f"\nwake phrase {recognizer.commands.wake!r} (no training, threshold "
        f"{recognizer.threshold:.2f}) in {recording.name}: heard {got}, its score {score:.2f}"
    )
    paths = others(data) + [data / name for name, text in SAID.items() if text in COMMANDS]
    woke = [p for p in paths if recognizer.commands.wake in heard(recognizer, vad, load(p))]
    for path in woke:
        print(f"  false wake in {path.relative_to(data)}")
    print(f"  real recordings of other words that woke it: {len(woke)}/{len(paths)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="pocketsphinx-5.1.1/test/data")
    parser.add_argument("--model", help="also count a trained command model's false accepts")
    parser.add_argument("--commands", help="the commands file that model was trained for")
    parser.add_argument(
        "--engines", default="phones,pocketsphinx", help="no-training engines to check"
    )
    parser.add_argument("--wake-recording", help="a real recording of a wake phrase (WAV)")
    parser.add_argument("--wake", help="the wake phrase said in --wake-recording")
    args = parser.parse_args()
    if bool(args.wake_recording) != bool(args.wake):
        parser.error("--wake-recording and --wake go together")
    data = Path(args.data)
    if not (data / "librivox").is_dir() or not (data / "goforward.raw").is_file():
        parser.error(f"{data} is not pocketsphinx's test/data folder (see the docstring)")
    vad = SileroVad(threads=1)
    vad_check(data, vad)
    for engine in args.engines.split(","):
        command_check(data, vad, engine)
    if args.wake_recording:
        wake_check(data, vad, Path(args.wake_recording), args.wake)
    if args.model:
        if not args.commands:
            parser.error("--model needs --commands")
        recognizer = open_recognizer(load_commands(args.commands), model=args.model)
        print(f"\ntrained model {args.model} (threshold {recognizer.threshold:.2f})")
        false_accepts(recognizer, data, vad)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
