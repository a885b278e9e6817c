"""``ubiq listen``: voice activity, commands, a wake phrase and transcripts as events.

```
ubiq listen --source talk.wav --commands commands.yaml --model runs/cmd/model.onnx \
    --jsonl events.jsonl
ubiq listen --source mic --commands commands.txt --wake "hey ubiq" --realtime
ubiq listen --source arecord:hw:1,0 --transcribe
```

Each event prints as one line and, with ``--jsonl``, is written (and flushed) as
``{"kind", "t_start", "t_end", "text", "intent", "slots", "confidence"}`` with times in
seconds of source audio. Kinds: ``speech.start``, ``speech.end``, ``speech.wake``,
``speech.command``, ``speech.transcript``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ubiq.errors import ConfigError, UbiqError


def add_parser(subparsers: Any) -> None:
    """Adds the ``listen`` command."""
    parser = subparsers.add_parser(
        "listen",
        help="speech events: voice activity, commands, wake phrase, transcripts",
        description="Listen to a microphone or a file and emit speech events.",
    )
    parser.add_argument(
        "--source",
        default="mic",
        help="a WAV/FLAC file, mic[:N|NAME], arecord[:DEVICE], or - for raw 16 kHz PCM on stdin",
    )
    parser.add_argument("--commands", metavar="FILE", help="commands file (.txt or .yaml)")
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="command classifier from `ubiq train --task kws --commands FILE` (exported), or "
        "a folder from `ubiq learn --task kws` (its commands.yaml is the default --commands)",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "model", "phones", "pocketsphinx"),
        default="auto",
        help="command engine (auto: the command model if given, else phones: the shipped "
        "phone recogniser, no training; its threshold is calibrated for the list at first "
        "start, about 25 s, then cached)",
    )
    parser.add_argument("--threshold", type=float, help="lowest command confidence accepted")
    parser.add_argument("--wake", metavar="PHRASE", help="accept commands only after this")
    parser.add_argument(
        "--wake-window", type=float, default=8.0, metavar="S", help="seconds a wake lasts"
    )
    parser.add_argument(
        "--transcribe",
        nargs="?",
        const="auto",
        metavar="ENGINE",
        help="transcribe every utterance (auto, pocketsphinx, faster-whisper, whisper)",
    )
    parser.add_argument("--jsonl", metavar="OUT", help="write the events as JSON lines")
    parser.add_argument(
        "--realtime", action="store_true", help="replay files at real time (test live behaviour)"
    )
    parser.add_argument("--vad-threshold", type=float, default=0.5, help="Silero speech threshold")
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    parser.add_argument("--quiet", action="store_true", help="print no events (JSONL only)")
    from ubiq.pipelines.outputs import events as outputs_events

    outputs_events.add_arguments(parser)
    parser.set_defaults(handler=run)


def _describe(record: dict) -> str:
    line = f"{record['t_start']:8.2f}-{record['t_end']:<8.2f} {record['kind']:<18}"
    if record["text"]:
        line += f" {record['text']!r}"
    if record["intent"]:
        line += f" intent={record['intent']}"
    if record["slots"]:
        line += " " + " ".join(f"{k}={v}" for k, v in record["slots"].items())
    if record["kind"] in ("speech.command", "speech.wake", "speech.transcript"):
        line += f" ({record['confidence']:.2f})"
    return line


def _enrolled_commands(model: str | None) -> str | None:
    """The commands file inside a ``ubiq learn --task kws`` folder, if ``model`` is one."""
    if not model:
        return None
    from pathlib import Path

    from ubiq.models.runtime.kws_enroll import COMMANDS_FILE

    candidate = Path(model).expanduser() / COMMANDS_FILE
    return str(candidate) if candidate.is_file() else None


def build_pipeline(args: argparse.Namespace):
    """The speech pipeline the arguments describe (validated before any audio is read)."""
    from ubiq.pipelines.speech.listen import SpeechPipeline
    from ubiq.pipelines.speech.vad import SileroVad, VadOptions, VadSegmenter

    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    recognizer = None
    commands_file = args.commands or _enrolled_commands(args.model)
    if commands_file:
        from ubiq.pipelines.speech.commands import load_commands
        from ubiq.pipelines.speech.recognize import open_recognizer

        commands = load_commands(commands_file).with_wake(args.wake)
        recognizer = open_recognizer(
            commands,
            engine=args.engine,
            model=args.model,
            threshold=args.threshold,
            threads=args.threads,
            progress=not args.quiet,
        )
    elif args.model or args.wake:
        raise ConfigError("--model and --wake need --commands FILE")
    transcriber = None
    if args.transcribe:
        from ubiq.pipelines.speech.transcribe import open_transcriber

        transcriber = open_transcriber(args.transcribe)
    try:
        options = VadOptions(threshold=args.vad_threshold)
    except ValueError as error:
        raise ConfigError(f"--vad-threshold: {error}") from error
    segmenter = VadSegmenter(options, SileroVad(threads=args.threads))
    return SpeechPipeline(segmenter, recognizer, transcriber, wake_window_s=args.wake_window)


def run(args: argparse.Namespace) -> int:
    from ubiq.hardware.sources.audio import open_audio_source
    from ubiq.pipelines.outputs import events as outputs_events
    from ubiq.pipelines.runner import Runner
    from ubiq.pipelines.sinks import CallbackSink
    from ubiq.pipelines.speech.listen import SpeechJsonlSink, SpeechStage, event_record

    outputs_events.check_arguments(args)
    pipeline = build_pipeline(args)
    source = open_audio_source(args.source, realtime=args.realtime)
    # Open the source before the output: a file or device that fails must not truncate a
    # JSONL that is already there.
    source.open()
    sinks = []
    if args.jsonl:
        try:
            sinks.append(SpeechJsonlSink(args.jsonl))
        except ConfigError as error:
            source.close()
            raise ConfigError(f"--jsonl: {error}") from error
    try:
        sinks += outputs_events.build_sinks(args, source, 0, 1)
    except BaseException:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    if not args.quiet:

        def show(result) -> None:
            for event in result.events:
                if event.kind.startswith("speech."):
                    print(_describe(event_record(event)), flush=True)

        sinks.append(CallbackSink(show))
    if pipeline.wake and not args.quiet:
        print(f"say {pipeline.wake!r} before a command", file=sys.stderr)
    started = time.perf_counter()
    # The runner every pipeline shares: SIGINT/SIGTERM stop it cleanly (an utterance still
    # open is closed and written), and under systemd it sends READY=1 and watchdog pings.
    try:
        summary = Runner(source, [SpeechStage(pipeline)], sinks).run()
    except UbiqError as error:
        if args.jsonl and "cannot write" in str(error):
            raise UbiqError(f"--jsonl: {error}") from error
        raise
    stats = pipeline.stats
    wall = time.perf_counter() - started
    print(
        f"listened to {stats.audio_s:.1f} s of audio in {wall:.1f} s: {stats.utterances} "
        f"utterances, {stats.commands} commands, {stats.rejected} not commands"
        + (f", {stats.outside_wake} without the wake phrase" if pipeline.wake else "")
        + (f", {stats.wake_splits} cut after the wake phrase" if stats.wake_splits else "")
        + f"; real-time factor {stats.real_time_factor:.3f}"
        + (", stopped by signal" if summary.stopped_by == "signal" else ""),
        file=sys.stderr,
    )
    if stats.audio_s == 0 and summary.stopped_by == "end":
        raise UbiqError(f"--source {args.source}: no audio")
    return 0
