"""The ``ubiq`` command line.

Every :class:`~ubiq.errors.UbiqError` becomes one line on stderr and a non-zero exit.
Subcommands import their heavy modules only when they run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ubiq import __version__
from ubiq.errors import UbiqError


def build_parser() -> argparse.ArgumentParser:
    """Returns the top-level parser with every subcommand."""
    from ubiq.cli import (
        bench,
        classify,
        compress,
        data,
        deploy,
        detect,
        doctor,
        export,
        learn,
        listen,
        models,
        run,
        segment,
        track,
        train,
        val,
    )

    parser = argparse.ArgumentParser(
        prog="ubiq", description="Embedded intelligence kit: detect, track, segment, listen."
    )
    parser.add_argument("--version", action="version", version=f"ubiq {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    detect.add_parser(subparsers)
    track.add_parser(subparsers)
    segment.add_parser(subparsers)
    run.add_parser(subparsers)
    models.add_parser(subparsers)
    bench.add_parser(subparsers)
    doctor.add_parser(subparsers)
    deploy.add_parser(subparsers)
    data.add_parser(subparsers)
    train.add_parser(subparsers)
    export.add_parser(subparsers)
    val.add_parser(subparsers)
    compress.add_parser(subparsers)
    listen.add_parser(subparsers)
    learn.add_parser(subparsers)
    classify.add_parser(subparsers)
    return parser


def quiet_native_logs() -> None:
    """Keeps OpenCV's and FFmpeg's own warnings off stderr (``-v`` shows them).

    ubiq reports a camera or stream that fails as one line of its own; the native
    libraries would add several more. Set before the first capture is opened.
    """
    import os

    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")


# Library parameters whose name starts the errors about them ("calib x holds no images"),
# and the flag (without "--") that sets each. Other first words ("backend 'coral' is
# unavailable", "source file not found") are not about a flag.
PARAMETER_FLAGS = {
    "batch": "batch",
    "calib": "calib",
    "classes": "classes",
    "confidence_threshold": "conf",
    "data": "data",
    "device": "device",
    "epochs": "epochs",
    "imgsz": "imgsz",
    "iou_threshold": "iou",
    "kd_temperature": "kd-temperature",
    "kd_weight": "kd-weight",
    "lr": "lr",
    "max_drop": "max-drop",
    "recipe": "recipe",
    "resume": "resume",
    "target": "target",
    "task": "task",
    "teacher": "teacher",
}


def flag_message(parser: argparse.ArgumentParser, command: str, message: str) -> str:
    """Names the flag where a library error starts with the parameter the flag sets:
    ``calib x holds no images`` -> ``--calib x holds no images`` for ``ubiq compress``,
    ``confidence_threshold must be ...`` -> ``--conf must be ...`` for ``ubiq detect``.

    The library names its parameters; only the CLI knows its flags.
    """
    head = message.split(" ", 1)[0].split(":", 1)[0]
    flag = PARAMETER_FLAGS.get(head)
    if flag is None:
        return message
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if not isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            continue
        subparser = action.choices.get(command)
        if subparser is None:
            return message
        for sub_action in subparser._actions:  # noqa: SLF001
            if f"--{flag}" in sub_action.option_strings:
                return f"--{flag}" + message[len(head) :]
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        quiet_native_logs()
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except UbiqError as error:
        message = flag_message(parser, args.command, str(error))
        print(f"ubiq {args.command}: error: {message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"ubiq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ubiq models info x | head`: the reader left; that is not an error.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
